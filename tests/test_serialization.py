"""Every serializable tfcompress object passes the shared serialization check.

The objects are found, not listed: every class with ``get_config`` exported by the
public faces (``tfc.quantizers``, ``tfc.schedules``, ``tfc.callbacks``, ``tfc.layers``,
``tfc.optimizers``) and every class registered under package "tfcompress" once the
whole package is imported. A class built with its default arguments needs no entry;
one that cannot be, and every layer (it needs an input shape), needs an entry in
``EXAMPLES`` / ``LAYER_EXAMPLES``, or its test fails and says so. So a new class cannot
be forgotten.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import keras
import numpy as np
import pytest
from serialization_checks import check_layer_serialization, check_serialization

import tfcompress as tfc

FACES = (tfc.quantizers, tfc.schedules, tfc.callbacks, tfc.layers, tfc.optimizers)

# Bases that only define an interface: not registered, never serialized themselves
# (each concrete subclass is checked).
BASES = {
    "Quantizer": "base of the uniform/learned quantizers",
    "BinaryQuantizer": "base of the binary/ternary quantizers",
    "SparsitySchedule": "base of the sparsity schedules",
}


def _teacher() -> keras.Model:
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="t_logits")])


def _criterion(name):
    return lambda: keras.saving.get_registered_object(f"tfcompress>{name}")()


# Class name -> a factory, for classes that need arguments. Values chosen so that
# nested objects (schedules, criteria, quantizers, selections) are serialized too.
EXAMPLES = {
    "ConstantSparsity": lambda: tfc.schedules.ConstantSparsity(0.6, begin_step=3),
    "PolynomialSparsity": lambda: tfc.schedules.PolynomialSparsity(
        0.8, begin_step=2, end_step=50, initial_sparsity=0.1, power=2.0
    ),
    "WarmupCosine": lambda: tfc.schedules.WarmupCosine(
        0.1, decay_steps=100, warmup_steps=10, final_learning_rate=1e-4
    ),
    "OneCycle": lambda: tfc.schedules.OneCycle(0.1, total_steps=100, pct_start=0.25),
    "Rewinding": lambda: tfc.schedules.Rewinding(
        tfc.schedules.WarmupCosine(0.1, decay_steps=100), restart_steps=[20, 40]
    ),
    "GradualPruning": lambda: tfc.callbacks.GradualPruning(
        0.7,
        begin_step=1,
        end_step=30,
        frequency=5,
        schedule=tfc.schedules.PolynomialSparsity(0.7, begin_step=1, end_step=30),
        granularity="channel",
        layers=["dense_a", "dense_b"],
    ),
    "DynamicSparseTraining": lambda: tfc.callbacks.DynamicSparseTraining(
        0.8, update_frequency=20, drop_fraction=0.2, end_step=200, layers=["dense_a"], seed=3
    ),
    "LearningRateRewinding": lambda: tfc.callbacks.LearningRateRewinding(
        tfc.schedules.WarmupCosine(0.1, decay_steps=100), restart_steps=[10, 30]
    ),
    "DistillationTeacher": lambda: tfc.callbacks.DistillationTeacher(
        _teacher(), temperature=3.0, alpha=0.7
    ),
    "KeepSparsity": lambda: tfc.callbacks.KeepSparsity(layers=["dense_a"]),
    "L0MacsConstraint": lambda: tfc.callbacks.L0MacsConstraint(
        0.4, gate_step=0.2, multiplier_rate=0.3, ramp=0.25, proportional=20.0, verbose=1
    ),
    "FlipRatio": lambda: tfc.callbacks.FlipRatio(frequency=5, per_layer=True),
    "TTQ": lambda: tfc.quantizers.TTQ(threshold=0.1, initial_scale=0.5),
    "Bop": lambda: tfc.optimizers.Bop(threshold=1e-6, gamma=1e-3, fp_optimizer="adam"),
    "WeightClip": lambda: tfc.layers.WeightClip(0.5),
    "PruningMask": lambda: keras.saving.get_registered_object("tfcompress>PruningMask")(
        np.array([[1, 0, 1], [0, 1, 1]], "float32"), inner=tfc.layers.WeightClip(0.5)
    ),
}


# Class name -> (factory, input shape with batch): every layer needs one.
def _language_model():
    return importlib.import_module("tfcompress.language_model")


LAYER_EXAMPLES = {
    "BinaryDense": (lambda: tfc.layers.BinaryDense(4), (2, 5)),
    "BinaryConv2D": (lambda: tfc.layers.BinaryConv2D(4, 3, padding="same"), (2, 6, 6, 2)),
    "BinaryDepthwiseConv2D": (lambda: tfc.layers.BinaryDepthwiseConv2D(3), (2, 6, 6, 2)),
    "QuantDense": (lambda: tfc.layers.QuantDense(4, activation="relu"), (2, 5)),
    "QuantConv1D": (lambda: tfc.layers.QuantConv1D(4, 3), (2, 8, 2)),
    "QuantConv2D": (lambda: tfc.layers.QuantConv2D(4, 3, strides=2), (2, 7, 7, 2)),
    "QuantDepthwiseConv2D": (lambda: tfc.layers.QuantDepthwiseConv2D(3), (2, 6, 6, 2)),
    "QuantSeparableConv2D": (
        lambda: tfc.layers.QuantSeparableConv2D(4, 3, depth_multiplier=2),
        (2, 6, 6, 2),
    ),
    "QuantConv2DTranspose": (
        lambda: tfc.layers.QuantConv2DTranspose(4, 3, strides=2, padding="same"),
        (2, 4, 4, 2),
    ),
    "QuantizeActivation": (lambda: tfc.layers.QuantizeActivation(activation="relu"), (2, 5)),
    "QuantizeOutput": (
        lambda: tfc.layers.QuantizeOutput(keras.layers.AveragePooling2D(2)),
        (2, 4, 4, 3),
    ),
    "ClusteredDense": (lambda: tfc.layers.ClusteredDense(4, clusters=4), (2, 5)),
    "ClusteredConv1D": (lambda: tfc.layers.ClusteredConv1D(4, 3, clusters=4), (2, 8, 2)),
    "ClusteredConv2D": (
        lambda: tfc.layers.ClusteredConv2D(4, 3, clusters=4, per_channel=True),
        (2, 6, 6, 2),
    ),
    "LowRankDense": (lambda: tfc.layers.LowRankDense(4, rank=2), (2, 6)),
    "LowRankConv2D": (lambda: tfc.layers.LowRankConv2D(4, 3, rank=2), (2, 6, 6, 3)),
    "FoldedBatchNorm": (
        lambda: keras.saving.get_registered_object("tfcompress>FoldedBatchNorm")(),
        (2, 5),
    ),
    "PositionEmbedding": (lambda: _language_model().PositionEmbedding(6), (2, 6, 4)),
    "CirculantDense": (lambda: tfc.layers.CirculantDense(8, block_size=4), (2, 8)),
    "ToeplitzDense": (lambda: tfc.layers.ToeplitzDense(8, block_size=4), (2, 8)),
    "HardConcreteGate": (
        lambda: tfc.pruning.HardConcreteGate(
            initial_log_alpha=1.0, temperature=0.5, stretch=(-0.2, 1.2), rate=10.0, seed=2
        ),
        (2, 4, 4, 3),
    ),
    "GatedMultiHeadAttention": (
        lambda: keras.saving.get_registered_object("tfcompress>GatedMultiHeadAttention")(
            num_heads=2, key_dim=4, gate={"initial_log_alpha": 1.0, "seed": 1}
        ),
        (2, 5, 6),
    ),
    "TransferredConv2D": (
        lambda: tfc.layers.TransferredConv2D(8, 3, group="rotations", padding="same"),
        (2, 6, 6, 2),
    ),
}


def _import_everything() -> None:
    """Imports every tfcompress module, so every registration has run."""
    for module in pkgutil.walk_packages(tfc.__path__, "tfcompress."):
        if module.name.endswith("__main__"):
            continue
        importlib.import_module(module.name)


def serializable_classes() -> dict[str, type]:
    """Name -> class: the faces' classes with get_config, and every 'tfcompress>' object."""
    _import_everything()
    found: dict[str, type] = {}
    for face in FACES:
        for name in face.__all__:
            obj = getattr(face, name)
            if inspect.isclass(obj) and hasattr(obj, "get_config"):
                found[obj.__name__] = obj
    for key, obj in keras.saving.get_custom_objects().items():
        if key.startswith("tfcompress>") and inspect.isclass(obj):
            found[obj.__name__] = obj
    return {name: cls for name, cls in sorted(found.items()) if name not in BASES}


CLASSES = serializable_classes()


def _example(cls: type):
    if cls.__name__ in EXAMPLES:
        return EXAMPLES[cls.__name__]()
    try:
        return cls()
    except TypeError as error:
        pytest.fail(
            f"{cls.__module__}.{cls.__name__} cannot be built with default arguments "
            f"({error}); add an entry to EXAMPLES in {__file__}"
        )


@pytest.mark.parametrize("name", [n for n, c in CLASSES.items() if issubclass(c, keras.Layer)])
def test_layer_round_trips(name):
    cls = CLASSES[name]
    assert name in LAYER_EXAMPLES, (
        f"layer {cls.__module__}.{name} has no entry in LAYER_EXAMPLES in {__file__}: "
        "add (factory, input shape)"
    )
    factory, input_shape = LAYER_EXAMPLES[name]
    layer = check_layer_serialization(factory, input_shape)
    assert type(layer) is cls


@pytest.mark.parametrize("name", [n for n, c in CLASSES.items() if not issubclass(c, keras.Layer)])
def test_object_round_trips(name):
    obj = _example(CLASSES[name])
    assert type(obj) is CLASSES[name]
    check_serialization(obj)


def test_the_walk_finds_every_kind_of_object():
    kinds = {
        "quantizer": "MinMaxQuantizer",
        "binary quantizer": "SteSign",
        "sparsity schedule": "PolynomialSparsity",
        "learning-rate schedule": "WarmupCosine",
        "criterion": "MagnitudeCriterion",
        "callback": "GradualPruning",
        "constraint": "WeightClip",
        "optimizer": "Bop",
        "layer": "QuantDense",
    }
    missing = {kind: name for kind, name in kinds.items() if name not in CLASSES}
    assert not missing, missing


def test_no_example_is_stale():
    stale = sorted((set(EXAMPLES) | set(LAYER_EXAMPLES)) - set(CLASSES))
    assert not stale, f"examples for classes that no longer exist: {stale}"
