"""Quantization-aware training on the digits CNN, side by side with the anchors.

Arms (same data, same architecture, one run):
  float            the float CNN (baseline for every ratio)
  tfc QAT int8     tfcompress.quantize_model + fine-tune, int8 TFLite without calibration
  tfc QAT int4w    same with 4-bit weight grids (int8 activations)
  TFLite PTQ int8  the float model calibrated by the converter (500 training images)
  Keras int8       keras Model.quantize("int8") (Dense only); its TFLite conversion is attempted
  TFMOT QAT        tfmot.quantization.keras.quantize_model on tf_keras, in a subprocess

Train-step ratio: float and QAT fits are interleaved in blocks of epochs inside one process;
each arm's figure is its minimum per-epoch time (noise on a shared 2-core machine is large).

Run: python3 run.py bench qat
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

import tfcompress as tfc
from tfcompress.core.io import write_text
from tfcompress.models import accuracy, digits_cnn, train_classifier
from tfcompress.reporting import format_table

FLOAT_EPOCHS = 10
QAT_EPOCHS = 4
TIMING_ROUNDS = 4
EPOCHS_PER_BLOCK = 2
LATENCY_RUNS = 300
RESULTS = Path(__file__).parent / "results"

TFMOT_SCRIPT = r"""
import json, os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, tensorflow as tf, tf_keras as keras
import tensorflow_model_optimization as tfmot
from ai_edge_litert.interpreter import Interpreter

data = np.load(sys.argv[1])
xtr, ytr, xte, yte = data["x_train"], data["y_train"], data["x_test"], data["y_test"]
float_epochs, qat_epochs, rounds, block = (int(a) for a in sys.argv[2:6])
keras.utils.set_random_seed(1)
L = keras.layers
model = keras.Sequential([
    keras.Input((8, 8, 1)),
    L.Conv2D(32, 3, padding="same", activation="relu"),
    L.Conv2D(64, 3, padding="same", activation="relu"),
    L.MaxPooling2D(2),
    L.Conv2D(128, 3, padding="same", activation="relu"),
    L.MaxPooling2D(2),
    L.Flatten(),
    L.Dense(128, activation="relu"),
    L.Dense(10),
])
def compile(m, lr):
    m.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
compile(model, 1e-3)
model.fit(xtr, ytr, epochs=float_epochs, batch_size=32, verbose=0)
float_acc = model.evaluate(xte, yte, verbose=0)[1]
qat = tfmot.quantization.keras.quantize_model(model)
compile(qat, 3e-4)
qat.fit(xtr, ytr, epochs=qat_epochs, batch_size=32, verbose=0)
qat_acc = qat.evaluate(xte, yte, verbose=0)[1]

class Timer(keras.callbacks.Callback):
    def __init__(self): super().__init__(); self.times = []
    def on_epoch_begin(self, epoch, logs=None): self.t = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None): self.times.append(time.perf_counter() - self.t)
timers = {"float": Timer(), "qat": Timer()}
for _ in range(rounds):
    for name, m in (("float", model), ("qat", qat)):
        m.fit(xtr, ytr, epochs=block, batch_size=32, verbose=0, callbacks=[timers[name]])
converter = tf.lite.TFLiteConverter.from_keras_model(qat)
converter.optimizations = [tf.lite.Optimize.DEFAULT]
flat = converter.convert()
interp = Interpreter(model_content=flat)
interp.allocate_tensors()
inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
preds = []
for i in range(len(xte)):
    x = xte[i:i + 1]
    if inp["dtype"] != np.float32:
        s, z = inp["quantization"]; x = np.round(x / s + z).astype(inp["dtype"])
    interp.set_tensor(inp["index"], x); interp.invoke(); y = interp.get_tensor(out["index"])
    if out["dtype"] != np.float32:
        s, z = out["quantization"]; y = (y.astype(np.float32) - z) * s
    preds.append(y[0])
preds = np.array(preds)
keras_preds = qat.predict(xte, verbose=0)
ops = {}
for d in interp._get_ops_details():
    ops[d["op_name"]] = ops.get(d["op_name"], 0) + 1
print(json.dumps({
    "float_keras_accuracy": float(float_acc),
    "keras_accuracy": float(qat_acc),
    "tflite_accuracy": float(np.mean(preds.argmax(1) == yte)),
    "top1_agreement": float(np.mean(preds.argmax(1) == keras_preds.argmax(1))),
    "bytes": len(flat),
    "float_epoch_s": min(timers["float"].times),
    "qat_epoch_s": min(timers["qat"].times),
    "ops": ops,
}))
"""


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def weight_dtypes(path: str) -> dict[str, int]:
    """Counts the stored dtypes of the weight tensors of conv/dense ops in a .tflite file."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    dtypes = {d["index"]: np.dtype(d["dtype"]).name for d in interpreter.get_tensor_details()}
    counts: dict[str, int] = {}
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            name = dtypes.get(int(op["inputs"][1]), "?")
            counts[name] = counts.get(name, 0) + 1
    return counts


def export_row(name, model, data, tmp, quantization, representative=None, note=""):
    report = tfc.tflite_export.export(
        model,
        os.path.join(tmp, f"{name.replace(' ', '_')}.tflite"),
        quantization=quantization,
        representative_data=representative,
        verify_data=data.x_test,
        verify_labels=data.y_test,
        latency_runs=LATENCY_RUNS,
        num_threads=1,
        verbose=0,
    )
    compute = {
        k: v
        for k, v in report.op_counts.items()
        if k.split("[")[0] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
    }
    return {
        "arm": name,
        "keras_accuracy": report.keras_accuracy,
        "tflite_accuracy": report.tflite_accuracy,
        "top1_agreement": report.top1_agreement,
        "bytes": report.bytes,
        "gzip_bytes": report.gzip_bytes,
        "latency_ms": report.latency_ms,
        "compute_ops": compute,
        "all_compute_int8": bool(compute) and all(k.endswith("[int8]") for k in compute),
        "note": note,
    }


def run_tfmot(data, tmp) -> dict:
    path = os.path.join(tmp, "digits.npz")
    np.savez(
        path, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test
    )
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    args = [str(a) for a in (FLOAT_EPOCHS, QAT_EPOCHS, TIMING_ROUNDS, EPOCHS_PER_BLOCK)]
    proc = subprocess.run(
        [sys.executable, "-c", TFMOT_SCRIPT, path, *args], env=env, capture_output=True, text=True
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": proc.stderr[-2000:]}
    return json.loads(lines[-1])


def main() -> dict:
    data = tfc.datasets.load_digits()
    keras.utils.set_random_seed(1)
    float_model = digits_cnn()
    train_classifier(float_model, data, epochs=FLOAT_EPOCHS)
    float_acc = accuracy(float_model, data.x_test, data.y_test)

    qat8 = tfc.quantize_model(float_model)
    train_classifier(qat8, data, epochs=QAT_EPOCHS, learning_rate=3e-4)
    qat4 = tfc.quantize_model(float_model, "int4")
    train_classifier(qat4, data, epochs=QAT_EPOCHS, learning_rate=3e-4)

    # Train-step time: float and QAT fits interleaved; min per-epoch time per arm.
    timers = {"float": EpochTimer(), "qat": EpochTimer()}
    timing_float = keras.models.clone_model(float_model)
    timing_float.set_weights(float_model.get_weights())
    timing_qat = tfc.quantize_model(float_model)
    train_classifier(timing_float, data, epochs=1)
    train_classifier(timing_qat, data, epochs=1)
    for _ in range(TIMING_ROUNDS):
        for name, model in (("float", timing_float), ("qat", timing_qat)):
            train_classifier(
                model, data, epochs=EPOCHS_PER_BLOCK, callbacks=[timers[name]], compile_model=False
            )
    float_epoch, qat_epoch = min(timers["float"].times), min(timers["qat"].times)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(export_row("float", float_model, data, tmp, None, note="baseline"))
        rows.append(export_row("tfc QAT int8", qat8, data, tmp, "int8", note="no calibration"))
        rows.append(export_row("tfc QAT int4w", qat4, data, tmp, "int8", note="4-bit weight grid"))
        rows[-1]["weight_dtypes"] = weight_dtypes(os.path.join(tmp, "tfc_QAT_int4w.tflite"))
        rows[-2]["weight_dtypes"] = weight_dtypes(os.path.join(tmp, "tfc_QAT_int8.tflite"))
        rows.append(
            export_row(
                "TFLite PTQ int8",
                float_model,
                data,
                tmp,
                "int8",
                representative=data.x_train[:500],
                note="500 calibration images",
            )
        )
        keras_int8 = keras.models.clone_model(float_model)
        keras_int8.set_weights(float_model.get_weights())
        keras_int8.quantize("int8")
        keras_row = {
            "arm": "Keras quantize('int8')",
            "keras_accuracy": accuracy(keras_int8, data.x_test, data.y_test),
        }
        try:
            keras_row.update(export_row("Keras int8", keras_int8, data, tmp, None))
            keras_row["arm"] = "Keras quantize('int8')"
            keras_row["note"] = "converted"
        except Exception as error:
            keras_row["note"] = f"TFLite conversion failed: {type(error).__name__}"
            keras_row["error"] = str(error)[:300]
        rows.append(keras_row)
        tfmot = run_tfmot(data, tmp)

    float_bytes = rows[0]["bytes"]
    for row in rows:
        if row.get("bytes"):
            row["bytes_ratio"] = row["bytes"] / float_bytes
    rows[0]["step_ratio"] = 1.0
    rows[1]["step_ratio"] = qat_epoch / float_epoch
    tfmot_row = {"arm": "TFMOT QAT (tf_keras)"}
    if "error" in tfmot:
        tfmot_row["note"] = "failed: " + tfmot["error"][-200:]
    else:
        tfmot_row.update(
            keras_accuracy=tfmot["keras_accuracy"],
            tflite_accuracy=tfmot["tflite_accuracy"],
            top1_agreement=tfmot["top1_agreement"],
            bytes=tfmot["bytes"],
            bytes_ratio=tfmot["bytes"] / float_bytes,
            step_ratio=tfmot["qat_epoch_s"] / tfmot["float_epoch_s"],
            note=f"its float model: {tfmot['float_keras_accuracy']:.4f}; ops {tfmot['ops']}",
        )
    rows.append(tfmot_row)

    headers = [
        "arm",
        "keras acc",
        "tflite acc",
        "agree",
        "bytes",
        "x float",
        "step x",
        "ms",
        "int8",
    ]
    table = [
        [
            r["arm"],
            r.get("keras_accuracy"),
            r.get("tflite_accuracy"),
            r.get("top1_agreement"),
            r.get("bytes"),
            r.get("bytes_ratio"),
            r.get("step_ratio"),
            r.get("latency_ms"),
            r.get("all_compute_int8"),
        ]
        for r in rows
    ]
    print(format_table(table, headers, title="QAT on the digits CNN (one run)"))
    for r in rows:
        if r.get("note"):
            print(f"  {r['arm']}: {r['note']}")
    result = {
        "float_accuracy": float_acc,
        "float_epoch_s": float_epoch,
        "qat_epoch_s": qat_epoch,
        "train_step_ratio": qat_epoch / float_epoch,
        "epoch_times": {k: t.times for k, t in timers.items()},
        "tfmot": tfmot,
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / "qat.json", json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    import argparse

    # No options: the arms are fixed so runs compare; --help says what it measures.
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    main()
