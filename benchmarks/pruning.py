"""Pruning on the digits CNN: tfcompress callbacks vs TFMOT ``prune_low_magnitude``.

Rows: the float model; 50/80/90% unstructured, 2:4 and 50% channels (+ shrink_model)
fine-tuned from it with GradualPruning; the 80% model after one epoch of int8 QAT
with KeepSparsity; TFMOT 80% (tf_keras, in a subprocess).
Columns: Keras accuracy, gzip bytes of the float and int8 TFLite files, the
train-step time ratio to the plain float step (the compiled steps timed
interleaved, min over rounds), MACs/params and single-thread interpreter latency.

Run: python3 run.py bench pruning
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

RESULTS = Path(__file__).parent / "results"
BASE_EPOCHS, FINE_TUNE_EPOCHS, BATCH = 10, 4, 32


def _train_step_seconds(arms: dict, data, steps: int = 20, rounds: int = 7) -> dict[str, float]:
    """Min over rounds of ``steps`` calls of each arm's compiled train function, interleaved."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(data).batch(BATCH, drop_remainder=True).repeat()
    iterators = {name: iter(dataset) for name in arms}
    best = {name: float("inf") for name in arms}
    for name, function in arms.items():
        function(iterators[name])  # warm up
    for _ in range(rounds):
        for name, function in arms.items():
            start = time.perf_counter()
            for _ in range(steps):
                logs = function(iterators[name])
            float(keras.ops.convert_to_numpy(logs["loss"]))
            best[name] = min(best[name], (time.perf_counter() - start) / steps)
    return best


class _KeepTrainFunction(keras.callbacks.Callback):
    """Keeps the compiled step (with its masks) before the pruning callback detaches them."""

    def on_epoch_end(self, epoch, logs=None):
        self.function = self.model.train_function


def _tfmot_subprocess(x_train, y_train, x_test, y_test) -> dict:
    script = r"""
import json, os, sys, time, gzip, tempfile
import numpy as np
import tf_keras as keras
import tensorflow as tf
import tensorflow_model_optimization as tfmot
d = np.load(sys.argv[1])
x, y, xt, yt = d["x"], d["y"], d["xt"], d["yt"]
def cnn():
    L = keras.layers
    return keras.Sequential([L.InputLayer((8, 8, 1)),
        L.Conv2D(32, 3, padding="same", activation="relu"), L.Conv2D(64, 3, padding="same", activation="relu"),
        L.MaxPooling2D(2), L.Conv2D(128, 3, padding="same", activation="relu"), L.MaxPooling2D(2),
        L.Flatten(), L.Dense(128, activation="relu"), L.Dense(10)])
keras.utils.set_random_seed(1)
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
base = cnn(); base.compile(keras.optimizers.Adam(1e-3), loss, ["accuracy"])
base.fit(x, y, epochs=int(sys.argv[2]), batch_size=32, verbose=0)
float_acc = float(np.mean(base.predict(xt, verbose=0).argmax(-1) == yt))
steps = int(np.ceil(len(x) / 32))
epochs = int(sys.argv[3])
schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.8, 0, (2 * epochs * steps) // 3, frequency=max(1, steps // 3))
pruned = tfmot.sparsity.keras.prune_low_magnitude(base, pruning_schedule=schedule)
pruned.compile(keras.optimizers.Adam(5e-4), loss, ["accuracy"])
class Times(keras.callbacks.Callback):
    def on_train_begin(self, logs=None): self.times = []
    def on_epoch_begin(self, e, logs=None): self.t = time.perf_counter()
    def on_epoch_end(self, e, logs=None): self.times.append(time.perf_counter() - self.t)
t_pruned = Times()
pruned.fit(x, y, epochs=epochs, batch_size=32, verbose=0,
           callbacks=[tfmot.sparsity.keras.UpdatePruningStep(), t_pruned])
plain = cnn(); plain.compile(keras.optimizers.Adam(5e-4), loss, ["accuracy"])
t_plain = Times()
plain.fit(x, y, epochs=epochs, batch_size=32, verbose=0, callbacks=[t_plain])
stripped = tfmot.sparsity.keras.strip_pruning(pruned)
acc = float(np.mean(stripped.predict(xt, verbose=0).argmax(-1) == yt))
kernels = [w for w in stripped.get_weights() if w.ndim >= 2]
sparsity = 1 - sum(int(np.count_nonzero(k)) for k in kernels) / sum(k.size for k in kernels)
conv = tf.lite.TFLiteConverter.from_keras_model(stripped)
conv.optimizations = [tf.lite.Optimize.DEFAULT]
conv.representative_dataset = lambda: ([x[i:i+1]] for i in range(500))
conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
int8 = conv.convert()
print("JSON" + json.dumps({"float_accuracy": float_acc, "accuracy": acc, "sparsity": sparsity,
    "int8_bytes": len(int8), "int8_gzip_bytes": len(gzip.compress(int8, 9)),
    "epoch_time_ratio": min(t_pruned.times[1:]) / min(t_plain.times[1:])}))
"""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "digits.npz"
        np.savez(path, x=x_train, y=y_train, xt=x_test, yt=y_test)
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
        done = subprocess.run(
            [sys.executable, "-c", script, str(path), str(BASE_EPOCHS), str(FINE_TUNE_EPOCHS)],
            capture_output=True,
            text=True,
            env=env,
            timeout=1200,
        )
    for line in done.stdout.splitlines():
        if line.startswith("JSON"):
            return json.loads(line[4:])
    return {"error": (done.stderr or done.stdout)[-2000:]}


def main() -> None:
    import tfcompress as tfc
    from tfcompress.export.tflite import export
    from tfcompress.models import accuracy, digits_cnn, train_classifier
    from tfcompress.reporting.table import format_table

    data = tfc.datasets.load_digits()
    keras.utils.set_random_seed(1)
    base = digits_cnn()
    train_classifier(base, data, epochs=BASE_EPOCHS)
    steps = int(np.ceil(len(data.x_train) / BATCH))
    out = Path(tempfile.mkdtemp())

    def fine_tune(callbacks):
        model = keras.models.clone_model(base)
        model.set_weights(base.get_weights())
        keeper = _KeepTrainFunction()
        train_classifier(
            model, data, epochs=FINE_TUNE_EPOCHS, learning_rate=5e-4, callbacks=[*callbacks, keeper]
        )
        return model, keeper.function

    end = (2 * FINE_TUNE_EPOCHS * steps) // 3
    frequency = max(1, steps // 3)
    arms = {
        "float (fine-tuned, no pruning)": [],
        "50% unstructured (global)": [GradualPruning_(0.5, end, frequency, scope="global")],
        "80% unstructured (global)": [GradualPruning_(0.8, end, frequency, scope="global")],
        "90% unstructured (global)": [GradualPruning_(0.9, end, frequency, scope="global")],
        "2:4": [GradualPruning_(None, end, frequency, granularity="2:4")],
        "50% channels + shrink": [
            GradualPruning_(
                0.5,
                end,
                frequency,
                granularity="channel",
                layers=["conv1", "conv2", "conv3", "dense1"],
            )
        ],
    }
    models, functions = {}, {}
    for name, callbacks in arms.items():
        print(f"fine-tuning: {name}", flush=True)
        models[name], functions[name] = fine_tune(callbacks)
    step_seconds = _train_step_seconds(functions, (data.x_train, data.y_train))
    plain = step_seconds["float (fine-tuned, no pruning)"]

    rows, results = [], []
    float_export = export(
        base,
        out / "float.tflite",
        verbose=0,
        verify_data=data.x_test,
        latency_runs=300,
        num_threads=1,
    )
    for name, model in models.items():
        deployed = tfc.shrink_model(model) if "shrink" in name else model
        report = export(
            deployed,
            out / "f.tflite",
            verbose=0,
            verify_data=data.x_test,
            latency_runs=300,
            num_threads=1,
        )
        int8 = export(
            deployed,
            out / "i.tflite",
            "int8",
            data.x_train,
            verbose=0,
            verify_data=data.x_test,
            verify_labels=data.y_test,
        )
        summary = tfc.summary(deployed, print_fn=None)
        result = {
            "arm": name,
            "keras_accuracy": accuracy(deployed, data.x_test, data.y_test),
            "int8_tflite_accuracy": int8.tflite_accuracy,
            "sparsity": tfc.summary(model, print_fn=None).sparsity,
            "params": summary.total_params,
            "macs": summary.total_macs,
            "float_bytes": report.bytes,
            "float_gzip_bytes": report.gzip_bytes,
            "float_sparse_encoding": report.sparse_encoding,
            "int8_bytes": int8.bytes,
            "int8_gzip_bytes": int8.gzip_bytes,
            "int8_gzip_ratio_to_float": float_export.gzip_bytes / int8.gzip_bytes,
            "train_step_ratio": step_seconds[name] / plain,
            "latency_ms": report.latency_ms,
            "latency_ratio_to_float": report.latency_ms / float_export.latency_ms,
        }
        results.append(result)
    print("80% + int8 QAT fine-tuning (KeepSparsity) ...", flush=True)
    results.append(_qat_after_pruning(models["80% unstructured (global)"], data, out, float_export))
    print("TFMOT (tf_keras subprocess) ...", flush=True)
    tfmot = _tfmot_subprocess(data.x_train, data.y_train, data.x_test, data.y_test)
    if "error" not in tfmot:
        tfmot["int8_gzip_ratio_to_float"] = float_export.gzip_bytes / tfmot["int8_gzip_bytes"]
    for r in results:
        rows.append(
            [
                r["arm"],
                round(100 * r["keras_accuracy"], 2),
                round(r["sparsity"], 3),
                r["params"],
                r["macs"],
                r["float_gzip_bytes"],
                r["int8_bytes"],
                r["int8_gzip_bytes"],
                round(r["int8_gzip_ratio_to_float"], 2),
                None if r["train_step_ratio"] is None else round(r["train_step_ratio"], 3),
                round(1000 * r["latency_ms"], 1),
            ]
        )
    if "error" not in tfmot:
        rows.append(
            [
                "TFMOT 80% (prune_low_magnitude)",
                round(100 * tfmot["accuracy"], 2),
                round(tfmot["sparsity"], 3),
                None,
                None,
                None,
                tfmot["int8_bytes"],
                tfmot["int8_gzip_bytes"],
                round(tfmot["int8_gzip_ratio_to_float"], 2),
                round(tfmot["epoch_time_ratio"], 3),
                None,
            ]
        )
    headers = [
        "arm",
        "acc %",
        "sparsity",
        "params",
        "MACs",
        "float gzip B",
        "int8 B",
        "int8 gzip B",
        "float gzip / int8 gzip",
        "step time / plain",
        "latency us",
    ]
    print(
        format_table(
            rows,
            headers,
            title=(
                f"Pruning, digits CNN (float model {100 * accuracy(base, data.x_test, data.y_test):.2f}%, "
                f"float TFLite {float_export.bytes} B, gzip {float_export.gzip_bytes} B, "
                f"latency {1000 * float_export.latency_ms:.1f} us)"
            ),
        )
    )
    print(
        "step time: compiled train step, arms interleaved, min of 7 rounds x 20 steps; "
        "TFMOT: min epoch time ratio in tf_keras (its own plain model as baseline); "
        "latency: the float file (the sparse one where it helps), the int8 file for the QAT row"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "float": {
            "accuracy": accuracy(base, data.x_test, data.y_test),
            "bytes": float_export.bytes,
            "gzip_bytes": float_export.gzip_bytes,
            "latency_ms": float_export.latency_ms,
        },
        "arms": results,
        "tfmot": tfmot,
    }
    from tfcompress.core.io import write_text

    write_text(RESULTS / "pruning.json", json.dumps(payload, indent=2))
    print(f"wrote {RESULTS / 'pruning.json'}")


def _qat_after_pruning(pruned, data, out, float_export) -> dict:
    """Deep-compression order: prune, then one epoch of int8 QAT that keeps the zeros."""
    import tfcompress as tfc
    from tfcompress.export.tflite import export
    from tfcompress.models import accuracy, train_classifier

    keras.utils.set_random_seed(1)
    qat = tfc.quantize_model(pruned)
    train_classifier(
        qat, data, epochs=1, learning_rate=1e-4, callbacks=[tfc.callbacks.KeepSparsity()]
    )
    int8 = export(
        qat,
        out / "qat.tflite",
        "int8",
        verbose=0,
        verify_data=data.x_test,
        verify_labels=data.y_test,
        latency_runs=300,
        num_threads=1,
    )
    summary = tfc.summary(qat, print_fn=None)
    return {
        "arm": "80% + int8 QAT (1 epoch, KeepSparsity)",
        "keras_accuracy": accuracy(qat, data.x_test, data.y_test),
        "int8_tflite_accuracy": int8.tflite_accuracy,
        "sparsity": summary.sparsity,
        "params": summary.total_params,
        "macs": summary.total_macs,
        "float_bytes": None,
        "float_gzip_bytes": None,
        "float_sparse_encoding": None,
        "int8_bytes": int8.bytes,
        "int8_gzip_bytes": int8.gzip_bytes,
        "int8_gzip_ratio_to_float": float_export.gzip_bytes / int8.gzip_bytes,
        "train_step_ratio": None,
        "latency_ms": int8.latency_ms,
        "latency_ratio_to_float": int8.latency_ms / float_export.latency_ms,
    }


def GradualPruning_(target, end, frequency, **kwargs):
    from tfcompress.callbacks import GradualPruning

    return GradualPruning(target, begin_step=0, end_step=end, frequency=frequency, **kwargs)


if __name__ == "__main__":
    import argparse

    # No options: the arms are fixed so runs compare; --help says what it measures.
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    main()
