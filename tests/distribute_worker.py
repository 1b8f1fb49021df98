"""Trains tfcompress features on one device and under MirroredStrategy; prints JSON diffs.

Run by ``tests/test_distribute.py`` in a subprocess: TensorFlow's logical
devices must be configured before it initialises them, which a pytest session
has already done. Every case builds the same model from the same seed, trains
it for a few steps on the same global batches once on the default (single
device) strategy and once under ``MirroredStrategy`` over two logical CPUs,
and reports the largest weight difference, whether masks agree exactly, and
whether the two replicas' copies of every variable are identical.

Usage: ``python tests/distribute_worker.py [case ...]`` (default: all cases).
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfcompress as tfc  # noqa: E402
from tfcompress.datasets import load_digits  # noqa: E402

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
    model.fit(X, Y, batch_size=BATCH, epochs=2, verbose=0)
    _PRETRAINED.append(model)
    return model


def _np(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def replica_spread(model: keras.Model) -> float:
    """Largest difference between the per-replica copies of any model variable."""
    spread = 0.0
    for variable in model.variables:
        value = variable.value
        copies = getattr(value, "values", None)
        if copies and len(copies) > 1:
            first = _np(copies[0])
            spread = max(spread, max(float(np.abs(_np(c) - first).max()) for c in copies))
    return spread


def n_distributed(model: keras.Model) -> int:
    return sum(isinstance(v.value, tf.distribute.DistributedValues) for v in model.variables)


# --- cases: each returns (model factory, compile kwargs, fit kwargs factory, inputs)


def _compile(model: keras.Model, optimizer=None) -> None:
    model.compile(
        optimizer=optimizer if optimizer is not None else keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def case_pruning(granularity: str):
    def build():
        return cnn(0)

    def callbacks():
        return [
            tfc.callbacks.GradualPruning(
                0.5 if granularity == "channel" else 0.75,
                begin_step=0,
                end_step=6,
                frequency=2,
                granularity=granularity,
            )
        ]

    return build, _compile, callbacks, X


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

    return build, _compile, list, X


def case_binarize_bop():
    base = pretrained_cnn()

    def build():
        return tfc.binarize_model(base, kernel_quantizer="ste_sign", keep_last=True)

    def compile_bop(model):
        _compile(
            model,
            tfc.optimizers.Bop(
                threshold=1e-6, gamma=1e-2, fp_optimizer=keras.optimizers.Adam(1e-2)
            ),
        )

    return build, compile_bop, list, X


def case_binary_layers():
    def build():
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                # No bias before BatchNorm: its gradient is rounding noise, which
                # Adam turns into full-size steps that differ between the arms.
                keras.layers.Conv2D(8, 3, use_bias=False, name="conv"),
                # synchronized: batch statistics over the global batch, as on one device.
                keras.layers.BatchNormalization(synchronized=True, name="bn"),
                tfc.layers.BinaryConv2D(
                    8, 3, padding="same", input_quantizer="ste_sign", name="bconv"
                ),
                tfc.layers.BinaryDepthwiseConv2D(3, padding="same", name="bdw"),
                keras.layers.Flatten(),
                tfc.layers.BinaryDense(16, input_quantizer="ste_sign", name="bdense"),
                keras.layers.Dense(10, name="logits"),
            ]
        )

    return build, _compile, list, X


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


CASES = {
    "pruning_unstructured": lambda: case_pruning("unstructured"),
    "pruning_channel": lambda: case_pruning("channel"),
    "dynamic_sparse": case_rigl,
    "distillation_with_pruning": case_distill_pruning,
    "quantize_model": case_quantize_model,
    "quant_layers": case_quant_layers,
    "binarize_model_bop": case_binarize_bop,
    "binary_layers": case_binary_layers,
    "factorize_model": case_factorize_model,
    "lowrank_layers": case_lowrank_layers,
}


def train(case, strategy):
    build, compile_fn, callbacks, x = case
    with strategy.scope():
        model = build()
        compile_fn(model)
    keras.utils.set_random_seed(0)
    cbs = callbacks()
    history = model.fit(x, Y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=cbs)
    return model, cbs, history.history


def run_case(name: str, mirrored) -> dict:
    case = CASES[name]()
    build = case[0]
    # Same initial weights in both arms, whatever the builder's randomness.
    init = build().get_weights()

    def seeded(c):
        def b():
            model = c[0]()
            model.set_weights(init)
            return model

        return (b, *c[1:])

    single, single_cbs, single_hist = train(seeded(case), tf.distribute.get_strategy())
    multi, multi_cbs, multi_hist = train(seeded(case), mirrored)
    diffs = [float(np.abs(_np(a) - _np(b)).max()) for a, b in zip(single.weights, multi.weights)]
    worst = int(np.argmax(diffs))
    scale = max(float(np.abs(_np(w)).max()) for w in single.weights)
    trainable = {id(v) for v in single.trainable_weights}
    moved = [
        float(np.abs(_np(a) - b).max()) for a, b in zip(single.weights, init) if id(a) in trainable
    ]
    result = {
        "moved": max(moved),
        "replicas": mirrored.num_replicas_in_sync,
        "n_distributed": n_distributed(multi),
        "n_variables": len(multi.variables),
        "max_weight_diff": max(diffs),
        "worst_weight": single.weights[worst].path,
        "weight_scale": scale,
        "replica_spread": replica_spread(multi),
        "loss_single": float(single_hist["loss"][-1]),
        "loss_mirrored": float(multi_hist["loss"][-1]),
    }
    masked = [cb for cb in single_cbs if hasattr(cb, "targets")]
    if masked:
        cb_single = masked[0]
        cb_multi = next(cb for cb in multi_cbs if hasattr(cb, "targets"))
        masks_single = [(_np(t.variable) != 0) for t in cb_single.targets]
        masks_multi = [(_np(t.variable) != 0) for t in cb_multi.targets]
        result["masks_equal"] = all(np.array_equal(a, b) for a, b in zip(masks_single, masks_multi))
        result["sparsity_single"] = cb_single.sparsity_logs().get("sparsity")
        result["sparsity_mirrored"] = cb_multi.sparsity_logs().get("sparsity")
        result["mask_variables_distributed"] = all(
            isinstance(m.value, tf.distribute.DistributedValues) for m in cb_multi.masks
        )
    probe = case[3][:64]
    outputs_single = _np(single(probe, training=False))
    outputs_multi = _np(multi(probe, training=False))
    result["max_output_diff"] = float(np.abs(outputs_single - outputs_multi).max())
    result["output_scale"] = float(np.abs(outputs_single).max())
    return result


def main(names: list[str]) -> None:
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {}
    for name in names or list(CASES):
        start = time.perf_counter()
        try:
            results[name] = run_case(name, mirrored)
        except Exception as error:  # reported per case, so one failure names its feature
            import traceback

            results[name] = {
                "error": f"{type(error).__name__}: {error}"[:2000],
                "traceback": traceback.format_exc()[-4000:],
            }
        results[name]["seconds"] = round(time.perf_counter() - start, 2)
    print("RESULTS " + json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
