"""The TFMOT side of :func:`tfcompress.bench.tfmot.tfmot_prune`, run as a script in a
subprocess with ``TF_USE_LEGACY_KERAS=1`` (TFMOT 0.8 runs on ``tf_keras`` only).

It imports neither ``keras`` 3 nor tfcompress: it rebuilds the given Sequential
model in ``tf_keras`` from a plain layer list, loads the trained weights, prunes
with ``prune_low_magnitude`` during the fine-tune, strips the wrappers and writes
the weights, the requested TFLite files and one JSON result line.

Usage: python _tfmot_worker.py INPUT.npz CONFIG.json OUT_DIR
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

RESULT_PREFIX = "TFMOT_RESULT "


def _build(keras, spec: dict):
    layers = [keras.layers.InputLayer(input_shape=tuple(spec["input_shape"]))]
    for item in spec["layers"]:
        layers.append(getattr(keras.layers, item["class_name"])(**item["config"]))
    return keras.Sequential(layers, name=spec.get("name", "model"))


class _EpochTimes:
    def __init__(self, keras):
        outer = self

        class Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                outer.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                outer.times.append(time.perf_counter() - outer.start)

        self.times: list[float] = []
        self.start = 0.0
        self.callback = Callback()


def main(argv: list[str]) -> None:
    import numpy as np
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    inputs, config_path, out = argv[1], argv[2], Path(argv[3])
    config = json.loads(Path(config_path).read_text())
    with np.load(inputs) as arrays:
        x, y, xt, yt = arrays["x"], arrays["y"], arrays["xt"], arrays["yt"]
        weights = [arrays[f"w{i:04d}"] for i in range(config["weights"])]
        representative = arrays["rep"] if "rep" in arrays.files else None

    started = time.perf_counter()
    keras.utils.set_random_seed(config["seed"])
    base = _build(keras, config["model"])
    base.set_weights(weights)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        0.0,
        config["sparsity"],
        0,
        config["end_step"],
        frequency=config["frequency"],
    )
    pruned = tfmot.sparsity.keras.prune_low_magnitude(base, pruning_schedule=schedule)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    pruned.compile(keras.optimizers.Adam(config["learning_rate"]), loss)
    timer = _EpochTimes(keras)

    def fit(model, callbacks):
        if config.get("whole_batches"):  # as the suite's fine-tune: no partial last batch
            data = (
                tf.data.Dataset.from_tensor_slices((x, y))
                .shuffle(len(x), seed=config["seed"], reshuffle_each_iteration=True)
                .batch(config["batch_size"], drop_remainder=True)
            )
            model.fit(data, epochs=config["epochs"], shuffle=False, verbose=0, callbacks=callbacks)
        else:
            model.fit(
                x,
                y,
                epochs=config["epochs"],
                batch_size=config["batch_size"],
                verbose=0,
                callbacks=callbacks,
            )

    fit(pruned, [tfmot.sparsity.keras.UpdatePruningStep(), timer.callback])
    seconds = time.perf_counter() - started
    ratio = None
    if config["time_epochs"]:  # the same fit without pruning, as the baseline of the step time
        plain = _build(keras, config["model"])
        plain.set_weights(weights)
        plain.compile(keras.optimizers.Adam(config["learning_rate"]), loss)
        plain_timer = _EpochTimes(keras)
        fit(plain, [plain_timer.callback])
        later = slice(1, None) if config["epochs"] > 1 else slice(None)
        ratio = min(timer.times[later]) / min(plain_timer.times[later])

    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    logits = stripped.predict(xt, verbose=0)
    final = stripped.get_weights()
    np.savez(out / "weights.npz", **{f"w{i:04d}": w for i, w in enumerate(final)})
    kernels = [w for w in final if w.ndim >= 2]
    sparsity = 1 - sum(int(np.count_nonzero(k)) for k in kernels) / sum(k.size for k in kernels)
    files = {}
    for mode in config["exports"]:
        converter = tf.lite.TFLiteConverter.from_keras_model(stripped)
        if mode == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: (
                [representative[i : i + 1]] for i in range(len(representative))
            )
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        path = out / f"{mode}.tflite"
        path.write_bytes(converter.convert())
        files[mode] = str(path)
    result = {
        "accuracy": float(np.mean(np.argmax(logits, axis=-1) == yt)),
        "finite": bool(np.all(np.isfinite(logits))),
        "sparsity": float(sparsity),
        "files": files,
        "epoch_time_ratio": ratio,
        "seconds": seconds,
        "versions": {"tfmot": tfmot.__version__, "tf_keras": keras.__version__},
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv)
