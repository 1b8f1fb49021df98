"""Pruning on the digits CNN: tfcompress callbacks vs TFMOT ``prune_low_magnitude``.

Rows: the float model; 50/80/90% unstructured, 2:4 and 50% channels (+ shrink_model)
fine-tuned from it with GradualPruning; the 80% model after one epoch of int8 QAT
with KeepSparsity; TFMOT 80% from the same float model (tf_keras, in a subprocess).
Columns: Keras accuracy, gzip bytes of the float and int8 TFLite files, the
train-step time ratio to the plain float step (the compiled steps timed
interleaved, min over rounds), MACs/params and single-thread interpreter latency.

Run: python3 run.py bench pruning
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from tfcompress.bench.timing import Timing, time_arms

RESULTS = Path(__file__).parent / "results"
BASE_EPOCHS, FINE_TUNE_EPOCHS, BATCH = 10, 4, 32
STEP_BLOCK = 20  # train steps per timing sample


def _train_step_seconds(arms: dict, data, steps: int = STEP_BLOCK, rounds: int = 7) -> Timing:
    """Each arm's compiled train function, ``steps`` calls per sample, arms interleaved over
    ``rounds`` rounds (``tfcompress.bench.timing``); divide a sample by ``steps`` for one step."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(data).batch(BATCH, drop_remainder=True).repeat()

    def block(function, iterator):
        for _ in range(steps):
            logs = function(iterator)
        float(keras.ops.convert_to_numpy(logs["loss"]))  # returns once the steps have finished

    iterators = {name: iter(dataset) for name in arms}
    timed = {
        name: (lambda f=function, it=iterators[name]: block(f, it))
        for name, function in arms.items()
    }
    return time_arms(timed, rounds=rounds, warmup=1)


def _latencies(files: dict[str, Path], x, rounds: int = 5, runs: int = 60) -> Timing:
    """Batch-1, one-thread invoke time of each file: arms interleaved, one sample per round
    (the median of ``runs`` invokes); the figure is the minimum over rounds."""
    from tfcompress.tflite_export import TFLiteModel

    models = {name: TFLiteModel(str(path), num_threads=1) for name, path in files.items()}
    arms = {name: (lambda m=m: m.predict(x[:1], batch_size=1)) for name, m in models.items()}
    return time_arms(arms, rounds=rounds, number=runs, warmup=5, reduce="median")


class _KeepTrainFunction(keras.callbacks.Callback):
    """Keeps the compiled step (with its masks) before the pruning callback detaches them."""

    def on_epoch_end(self, epoch, logs=None):
        self.function = self.model.train_function


def _tfmot_arm(base, data, epochs: int, end: int, frequency: int) -> dict:
    """TFMOT 80% from the same trained model, schedule and budget (one subprocess: the
    suite's ``tfcompress.bench.tfmot_subprocess``), exported as full int8."""
    from tfcompress.bench.tfmot_subprocess import TFMOTUnavailableError, tfmot_prune

    try:
        result = tfmot_prune(
            base,
            data,
            0.8,
            epochs=epochs,
            end_step=end,
            frequency=frequency,
            batch_size=BATCH,
            learning_rate=5e-4,
            exports=("int8",),
            representative_data=data.x_train[:500],
            time_epochs=True,
        )
    except (TFMOTUnavailableError, RuntimeError) as error:
        return {"error": str(error)}
    int8 = result.files["int8"]
    return {
        "accuracy": result.accuracy,
        "sparsity": result.sparsity,
        "int8_bytes": len(int8),
        "int8_gzip_bytes": len(gzip.compress(int8, 9)),
        "epoch_time_ratio": result.epoch_time_ratio,
        "versions": result.versions,
    }


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
    steps_timing = _train_step_seconds(functions, (data.x_train, data.y_train))

    rows, results = [], []
    float_export = export(base, out / "float.tflite", verbose=0, verify_data=data.x_test)
    files = {"float": out / "float.tflite"}
    for i, (name, model) in enumerate(models.items()):
        deployed = tfc.shrink_model(model) if "shrink" in name else model
        files[name] = out / f"arm{i}.tflite"
        report = export(deployed, files[name], verbose=0, verify_data=data.x_test)
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
            "train_step_ratio": steps_timing.ratio(name, to="float (fine-tuned, no pruning)"),
            "train_step_ms": 1000 * steps_timing.min(name) / STEP_BLOCK,
        }
        results.append(result)
    print("80% + int8 QAT fine-tuning (KeepSparsity) ...", flush=True)
    qat_row = _qat_after_pruning(models["80% unstructured (global)"], data, out, float_export)
    files[qat_row["arm"]] = out / "qat.tflite"
    results.append(qat_row)
    print("latency (files interleaved) ...", flush=True)
    latency = _latencies(files, data.x_test)
    float_export.latency_ms = 1000 * latency.min("float")
    for r in results:
        r["latency_ms"] = 1000 * latency.min(r["arm"])
        r["latency_median_ms"] = 1000 * latency.median(r["arm"])
        r["latency_ratio_to_float"] = latency.ratio(r["arm"])
    print("TFMOT (tf_keras subprocess) ...", flush=True)
    tfmot = _tfmot_arm(base, data, FINE_TUNE_EPOCHS, end, frequency)
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
        "TFMOT: same float model, schedule and budget, in tf_keras; min epoch time ratio "
        "to the same fit without pruning; "
        "latency: the float file (the sparse one where it helps), the int8 file for the QAT row, "
        "one thread, batch 1, files interleaved, min over 5 rounds of the median of 60 invokes"
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
        "train_step_timing": steps_timing.to_dict(),
        "latency_timing": latency.to_dict(),
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
