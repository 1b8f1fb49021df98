"""Binary digits CNN (trained from scratch) vs its float twin: accuracy, packed bytes, TFLite bytes.

Run: python3 run.py bench binary [--epochs 15]

Both models have the same layers (conv 32/64/128, dense 128, logits, with
BatchNormalization); in the binary one conv2, conv3 and dense1 have binary
weights (XNOR-Net per-channel scales) and binary inputs. Every figure of
both arms is measured in this run. The binary arm is also exported with
quantization="binary" (1-bit packed kernels in a stock-LiteRT file, see
tfcompress/export/binary_packed.py); its size is compared with its own float32 file and its
one-thread latency with that file's, the two measured interleaved in this run. If TFCOMPRESS_LARQ_PYTHON names a Python with
larq and tf_keras installed (larq needs legacy Keras, so keep it in its own venv), the
same binary model is trained there in a subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras

from tfcompress.core.io import write_text
from tfcompress.datasets import load_digits
from tfcompress.export.interpreter import TFLiteModel
from tfcompress.export.tflite import export
from tfcompress.models import accuracy, digits_binary_cnn, digits_float_twin, train_classifier
from tfcompress.packing import save_packed
from tfcompress.reporting.table import format_table

RESULTS = Path(__file__).parent / "results" / "binary.json"
_LARQ_ENV = os.environ.get("TFCOMPRESS_LARQ_PYTHON")
LARQ_PYTHON = Path(_LARQ_ENV) if _LARQ_ENV else None

LARQ_SCRIPT = r"""
import json, os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np, tf_keras as K, larq as lq
d = np.load(sys.argv[1]); epochs = int(sys.argv[2])
q = dict(input_quantizer="ste_sign", kernel_quantizer="magnitude_aware_sign",
         kernel_constraint="weight_clip", use_bias=False)
m = K.Sequential([
    K.layers.Conv2D(32, 3, padding="same", use_bias=False, input_shape=(8, 8, 1)),
    K.layers.BatchNormalization(),
    lq.layers.QuantConv2D(64, 3, padding="same", **q), K.layers.BatchNormalization(),
    K.layers.MaxPooling2D(2),
    lq.layers.QuantConv2D(128, 3, padding="same", **q), K.layers.BatchNormalization(),
    K.layers.MaxPooling2D(2), K.layers.Flatten(),
    lq.layers.QuantDense(128, **q), K.layers.BatchNormalization(), K.layers.Dense(10)])
m.compile(K.optimizers.Adam(1e-2), K.losses.SparseCategoricalCrossentropy(from_logits=True),
          metrics=["accuracy"])
m.fit(d["x_train"], d["y_train"], epochs=epochs, batch_size=32, verbose=0)
print(json.dumps({"larq_accuracy": float(m.evaluate(d["x_test"], d["y_test"], verbose=0)[1])}))
"""


def _larq(data, epochs: int) -> dict:
    if LARQ_PYTHON is None or not LARQ_PYTHON.exists():
        return {"larq": "not measured (set TFCOMPRESS_LARQ_PYTHON to a Python with larq)"}
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "digits.npz"
        np.savez(
            npz, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test
        )
        proc = subprocess.run(
            [str(LARQ_PYTHON), "-c", LARQ_SCRIPT, str(npz), str(epochs)],
            capture_output=True,
            text=True,
            timeout=1200,
            env={**os.environ, "TF_USE_LEGACY_KERAS": "1"},
        )
    if proc.returncode != 0:
        return {"larq": f"failed: {proc.stderr.strip().splitlines()[-1:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _interleaved_latency_ms(paths: dict[str, Path], x, rounds: int = 30, invokes: int = 20):
    """Per file, the minimum over rounds of the mean one-thread invoke time (arms interleaved)."""
    calls = {key: TFLiteModel(path, num_threads=1).invoker(x[:1]) for key, path in paths.items()}
    best = {key: float("inf") for key in paths}
    for call in calls.values():  # warm-up
        for _ in range(invokes):
            call()
    for _ in range(rounds):
        for key, call in calls.items():
            start = time.perf_counter()
            for _ in range(invokes):
                call()
            best[key] = min(best[key], (time.perf_counter() - start) / invokes * 1e3)
    return best


def _arm(name, model, data, epochs, lr, tmp):
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    train_classifier(model, data, epochs=epochs, learning_rate=lr)
    train_s = time.perf_counter() - start
    row = {"model": name, "keras_accuracy": accuracy(model, data.x_test, data.y_test)}
    row["train_s"] = train_s
    packed = save_packed(model, Path(tmp) / f"{name}.npz")
    row["stored_bytes"] = packed.file_bytes
    row["bits_per_binarized_weight"] = packed.bits_per_binarized_weight or None
    binary = name == "binary CNN"
    for mode in (None, "dynamic", "binary") if binary else (None, "dynamic"):
        report = export(
            model,
            Path(tmp) / f"{name}_{mode}.tflite",
            quantization=mode,
            verify_data=data.x_test,
            verify_labels=data.y_test,
            verbose=0,
        )
        key = mode or "float"
        row[f"tflite_{key}_bytes"] = report.bytes
        row[f"tflite_{key}_accuracy"] = report.tflite_accuracy
        row[f"tflite_{key}_agreement"] = report.top1_agreement
        if mode == "binary":
            row["tflite_binary_quantization"] = report.quantization  # "dynamic" if it fell back
            row["tflite_binary_max_abs_diff"] = report.max_abs_diff
            row["tflite_binary_bits_per_binarized_weight"] = report.bits_per_binary_weight
            row["tflite_binary_ratio_to_own_float"] = report.bytes / row["tflite_float_bytes"]
    if binary:
        paths = {k: Path(tmp) / f"{name}_{k}.tflite" for k in ("None", "binary")}
        latency = _interleaved_latency_ms(paths, data.x_test)
        row["latency_float_ms"] = latency["None"]
        row["latency_binary_ms"] = latency["binary"]
        row["latency_binary_ratio_to_float"] = latency["binary"] / latency["None"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    data = load_digits()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            _arm("float twin", digits_float_twin(), data, args.epochs, 1e-3, tmp),
            _arm("binary CNN", digits_binary_cnn(), data, args.epochs, 1e-2, tmp),
        ]
    base = rows[0]
    for row in rows:
        row["stored_ratio"] = row["stored_bytes"] / base["stored_bytes"]
        row["tflite_dynamic_ratio_to_float_twin"] = (
            row["tflite_dynamic_bytes"] / base["tflite_float_bytes"]
        )
    larq = _larq(data, args.epochs)
    headers = [
        "model",
        "acc %",
        "stored B",
        "bits/bin w",
        "TFLite f32 B",
        "TFLite int8 B",
        "int8 acc %",
        "int8 agree %",
        "int8 / float twin f32",
    ]
    table = [
        [
            r["model"],
            round(100 * r["keras_accuracy"], 2),
            r["stored_bytes"],
            None
            if r["bits_per_binarized_weight"] is None
            else round(r["bits_per_binarized_weight"], 3),
            r["tflite_float_bytes"],
            r["tflite_dynamic_bytes"],
            round(100 * r["tflite_dynamic_accuracy"], 2),
            round(100 * r["tflite_dynamic_agreement"], 2),
            round(r["tflite_dynamic_ratio_to_float_twin"], 3),
        ]
        for r in rows
    ]
    print(
        format_table(
            table, headers, title=f"Binary digits CNN vs float twin ({args.epochs} epochs)"
        )
    )
    print("larq (tf_keras, same model):", larq)
    row = rows[1]
    if "tflite_binary_bytes" in row:
        print(
            f"stock-LiteRT binary file (quantization='binary', written as "
            f"{row['tflite_binary_quantization']!r}): {row['tflite_binary_bytes']:,} B = "
            f"1/{1 / row['tflite_binary_ratio_to_own_float']:.1f} of its float32 file "
            f"({row['tflite_float_bytes']:,} B), "
            f"{row['tflite_binary_bits_per_binarized_weight'] or float('nan'):.3f} bits per "
            f"binarized weight, top-1 agreement {100 * row['tflite_binary_agreement']:.2f}%, "
            f"max abs logit diff {row['tflite_binary_max_abs_diff']:.2g}; one-thread latency "
            f"{row['latency_binary_ms']:.3f} ms vs float {row['latency_float_ms']:.3f} ms "
            f"({row['latency_binary_ratio_to_float']:.1f}x, interleaved, min of 30 rounds)"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS, json.dumps({"epochs": args.epochs, "rows": rows, "larq": larq}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
