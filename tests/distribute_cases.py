"""Features trained on one device and data-parallel: the cases the distribute tests share.

``tests/distribute_worker.py`` (``MirroredStrategy``), ``tests/multiworker_worker.py``
(``MultiWorkerMirroredStrategy``, one process per worker) and
``tests/jax_distribute_worker.py`` (``keras.distribution.DataParallel``) train the
same cases from here. Each case builds the same model from the same seed and
trains it for ``STEPS`` steps of a ``BATCH``-example global batch; ``prepare``
fixes the initial weights once, so both arms of a comparison start from them.

Importing this module configures no devices and picks no backend: the workers
do that first. It imports TensorFlow only through tfcompress.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

import tfcompress as tfc
from tfcompress.datasets import load_digits

BATCH = 32
STEPS = 8
DATA = load_digits()
X = DATA.x_train[: BATCH * STEPS]
Y = DATA.y_train[: BATCH * STEPS]
XF = X.reshape(len(X), -1)


def cnn(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.Dense(10, name="logits"),
        ]
    )


_PRETRAINED: list[keras.Model] = []


def pretrained_cnn() -> keras.Model:
    """A float model trained briefly (once), the input of the model transforms."""
    if _PRETRAINED:
        return _PRETRAINED[0]
    model = cnn(1)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(X, Y, batch_size=BATCH, epochs=2, verbose=0, shuffle=False)
    _PRETRAINED.append(model)
    return model


def to_numpy(x: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


# --- cases: each returns (model factory, compile function, callbacks factory, inputs)


def _compile(model: keras.Model, optimizer: Any = None) -> None:
    model.compile(
        optimizer=optimizer if optimizer is not None else keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


SPARSITY = {"unstructured": 0.75, "block": 0.75, "channel": 0.5, "2:4": 0.5}


def case_pruning(granularity: str):
    def callbacks():
        return [
            tfc.callbacks.GradualPruning(
                SPARSITY[granularity],
                begin_step=0,
                end_step=6,
                frequency=2,
                granularity=granularity,
            )
        ]

    return lambda: cnn(0), _compile, callbacks, X


def case_rigl():
    def callbacks():
        return [
            tfc.callbacks.DynamicSparseTraining(
                0.7,
                distribution="erk",
                update_frequency=2,
                end_step=7,
                data=(X[:64], Y[:64]),
            )
        ]

    return lambda: cnn(0), _compile, callbacks, X


def case_distill():
    teacher = pretrained_cnn()

    def callbacks():
        return [tfc.callbacks.DistillationTeacher(teacher, temperature=2.0, alpha=0.5)]

    return lambda: cnn(0), _compile, callbacks, X


def case_distill_pruning():
    teacher = pretrained_cnn()

    def callbacks():
        return [
            tfc.callbacks.DistillationTeacher(teacher, temperature=2.0, alpha=0.5),
            tfc.callbacks.GradualPruning(0.5, begin_step=0, end_step=6, frequency=2),
        ]

    return lambda: cnn(0), _compile, callbacks, X


def case_quantize_model():
    base = pretrained_cnn()
    return lambda: tfc.quantize_model(base), _compile, list, X


def case_quant_layers():
    def build():
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                tfc.layers.QuantConv2D(
                    8, 3, activation="relu", input_quantizer="int8_activation", name="qconv"
                ),
                tfc.layers.QuantDepthwiseConv2D(3, padding="same", name="qdw"),
                keras.layers.Flatten(),
                tfc.layers.QuantizeActivation("int8_activation", name="qact"),
                tfc.layers.QuantDense(
                    16,
                    activation="relu",
                    kernel_quantizer=tfc.quantizers.LSQQuantizer(bits=4),
                    activation_quantizer=tfc.quantizers.PACTQuantizer(bits=4),
                    name="qdense",
                ),
                tfc.layers.QuantDense(10, activation_quantizer=None, name="qlogits"),
            ]
        )

    def compile_fn(model: keras.Model) -> None:
        # Plain SGD: the arms' gradients differ by float rounding (batches split over devices
        # sum in another order), and Adam turns such differences on near-zero gradients (kernel
        # entries the fake-quant clips almost everywhere) into full-size steps. With Adam(1e-2)
        # this model's kernels drifted 3.6e-3 apart in 8 steps on JAX's DataParallel (epsilon
        # 1e-3: 3e-8, 1e-4: 1.3e-3, 1e-5: 8e-7; chaotic), with SGD 3e-8: the quantizers agree.
        _compile(model, keras.optimizers.SGD(0.05))

    return build, compile_fn, list, X


def _compile_bop(model: keras.Model) -> None:
    _compile(
        model,
        tfc.optimizers.Bop(threshold=1e-6, gamma=1e-2, fp_optimizer=keras.optimizers.Adam(1e-2)),
    )


def case_binarize_bop():
    base = pretrained_cnn()

    def build():
        return tfc.binarize_model(base, kernel_quantizer="ste_sign", keep_last=True)

    return build, _compile_bop, list, X


def _binary_cnn() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            # No bias before BatchNorm: its gradient is rounding noise, which
            # Adam turns into full-size steps that differ between the arms.
            keras.layers.Conv2D(8, 3, use_bias=False, name="conv"),
            # Batch statistics over the global batch, as on one device: synchronized on
            # tf.distribute; JAX's DataParallel step is one program over the global batch.
            keras.layers.BatchNormalization(
                synchronized=keras.backend.backend() == "tensorflow", name="bn"
            ),
            tfc.layers.BinaryConv2D(8, 3, padding="same", input_quantizer="ste_sign", name="bconv"),
            tfc.layers.BinaryDepthwiseConv2D(3, padding="same", name="bdw"),
            keras.layers.Flatten(),
            tfc.layers.BinaryDense(16, input_quantizer="ste_sign", name="bdense"),
            keras.layers.Dense(10, name="logits"),
        ]
    )


def case_binary_layers():
    return _binary_cnn, _compile, list, X


def case_binary_layers_bop():
    return _binary_cnn, _compile_bop, list, X


def case_factorize_model():
    base = pretrained_cnn()

    def build():
        return tfc.factorize_model(base, rank=2, verbose=0)

    return build, _compile, list, X


def case_lowrank_layers():
    def build():
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [
                keras.Input((64,)),
                tfc.layers.LowRankDense(24, rank=4, activation="relu", name="lr1"),
                tfc.layers.LowRankDense(10, rank=3, name="lr2"),
            ]
        )

    return build, _compile, list, XF


CASES: dict[str, Callable[[], tuple]] = {
    "pruning_unstructured": lambda: case_pruning("unstructured"),
    "pruning_block": lambda: case_pruning("block"),
    "pruning_channel": lambda: case_pruning("channel"),
    "pruning_2_4": lambda: case_pruning("2:4"),
    "dynamic_sparse": case_rigl,
    "distillation": case_distill,
    "distillation_with_pruning": case_distill_pruning,
    "quantize_model": case_quantize_model,
    "quant_layers": case_quant_layers,
    "binarize_model_bop": case_binarize_bop,
    "binary_layers": case_binary_layers,
    "binary_layers_bop": case_binary_layers_bop,
    "factorize_model": case_factorize_model,
    "lowrank_layers": case_lowrank_layers,
}


# --- training both arms and comparing them


@dataclass
class Case:
    name: str
    build: Callable[[], keras.Model]
    compile: Callable[[keras.Model], None]
    callbacks: Callable[[], list]
    x: np.ndarray
    init: list[np.ndarray]


@dataclass
class Trained:
    model: keras.Model
    callbacks: list
    history: dict = field(default_factory=dict)


def prepare(name: str) -> Case:
    """The case's pieces and its initial weights (built once, outside any strategy)."""
    build, compile_fn, callbacks, x = CASES[name]()
    return Case(name, build, compile_fn, callbacks, x, build().get_weights())


def train(
    case: Case,
    scope: Callable[[], Any] = contextlib.nullcontext,
    fit_scope: Callable[[], Any] = contextlib.nullcontext,
    **fit: Any,
) -> Trained:
    """Builds and compiles ``case`` from its initial weights inside ``scope()``, then fits it.

    ``fit`` runs inside ``fit_scope()``: nothing for ``tf.distribute`` (Keras uses the
    strategy the model was created under, and callbacks start outside it, as in a
    user's script), the distribution's scope for ``keras.distribution``. ``fit``
    overrides the default arguments (``x``, ``y``: the case's data; one epoch of
    ``STEPS`` global batches of ``BATCH``, in order); ``callbacks`` in it are added
    after the case's own.
    """
    with scope():
        model = case.build()
        model.set_weights(case.init)
        case.compile(model)
    keras.utils.set_random_seed(0)
    callbacks = [*case.callbacks(), *fit.pop("callbacks", [])]
    x, y = fit.pop("x", case.x), fit.pop("y", Y)
    kwargs = {"batch_size": BATCH, "epochs": 1, "shuffle": False, "verbose": 0, **fit}
    with fit_scope():
        history = model.fit(x, y, callbacks=callbacks, **kwargs)
    return Trained(model, callbacks, history.history)


def masked(trained: Trained) -> Any:
    """The pruning callback of a run, or None."""
    return next((cb for cb in trained.callbacks if hasattr(cb, "targets")), None)


def masks(trained: Trained) -> list[np.ndarray]:
    """The pruned weights' masks (``!= 0``) after training; empty without pruning."""
    callback = masked(trained)
    if callback is None:
        return []
    return [to_numpy(t.variable) != 0 for t in callback.targets]


def weights(trained: Trained) -> list[np.ndarray]:
    return [to_numpy(w) for w in trained.model.weights]


def compare(case: Case, single: Trained, multi: Trained) -> dict:
    """Largest weight, loss and output differences between the two arms; masks."""
    single_weights, multi_weights = weights(single), weights(multi)
    diffs = [float(np.abs(a - b).max()) for a, b in zip(single_weights, multi_weights)]
    worst = int(np.argmax(diffs))
    trainable = {id(v) for v in single.model.trainable_weights}
    moved = [
        float(np.abs(a - b).max())
        for v, a, b in zip(single.model.weights, single_weights, case.init)
        if id(v) in trainable
    ]
    result = {
        "moved": max(moved),
        "max_weight_diff": max(diffs),
        "worst_weight": single.model.weights[worst].path,
        "weight_scale": max(float(np.abs(w).max()) for w in single_weights),
        "loss_single": float(single.history["loss"][-1]),
        "loss_multi": float(multi.history["loss"][-1]),
    }
    if masked(single) is not None:
        a, b = masks(single), masks(multi)
        result["masks_equal"] = len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
        result["sparsity_single"] = masked(single).sparsity_logs().get("sparsity")
        result["sparsity_multi"] = masked(multi).sparsity_logs().get("sparsity")
    probe = case.x[:64]
    outputs_single = to_numpy(single.model(probe, training=False))
    outputs_multi = to_numpy(multi.model(probe, training=False))
    result["max_output_diff"] = float(np.abs(outputs_single - outputs_multi).max())
    result["output_scale"] = float(np.abs(outputs_single).max())
    return result


@contextlib.contextmanager
def reported(results: dict, name: str) -> Iterator[dict]:
    """Collects one case's result; an exception is reported for that case, not raised."""
    import time
    import traceback

    start = time.perf_counter()
    result: dict = {}
    try:
        yield result
    except Exception as error:
        result.clear()
        result["error"] = f"{type(error).__name__}: {error}"[:2000]
        result["traceback"] = traceback.format_exc()[-4000:]
    result["seconds"] = round(time.perf_counter() - start, 2)
    results[name] = result
