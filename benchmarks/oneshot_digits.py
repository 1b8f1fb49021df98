"""One-shot compression of the digits CNN, no fine-tuning: accuracy after each method.

Trains ``tfc.models.digits_cnn()`` (8 epochs, as the test fixture does), then,
from ``--calibration`` training images:

* prunes 70% (and 2:4) with SparseGPT and with one-shot magnitude;
* quantizes 4-bit weights with GPTQ and round-to-nearest (per output channel
  for the convolutions, per tensor for Dense, so the int8 TFLite file holds the
  grid), exports the GPTQ model to TFLite and checks its accuracy there too;
* compresses 50% + 4-bit jointly.

Prints test accuracy (359 images: one image is 0.28 points) and the mean
layer error of each method against its baseline. One run, one seed per call.

    .venv/bin/python benchmarks/oneshot_digits.py [--calibration 256] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import keras
import numpy as np

import tfcompress as tfc


def _accuracy(model, data) -> float:
    logits = model.predict(data.x_test, batch_size=256, verbose=0)
    return float(np.mean(logits.argmax(-1) == data.y_test))


def run(calibration: int = 256, seed: int = 1) -> dict:
    """Trains the CNN and compresses it every way; returns accuracies and errors."""
    data = tfc.datasets.load_digits()
    keras.utils.set_random_seed(seed)
    model = tfc.models.digits_cnn()
    tfc.models.train_classifier(model, data, epochs=8, verbose=0)
    rng = np.random.default_rng(seed)
    calib = data.x_train[rng.choice(len(data.x_train), calibration, replace=False)]
    rows = [{"method": "float", "accuracy": _accuracy(model, data)}]
    kw = {"verbose": 0, "return_report": True}
    jobs = {
        "prune 70% sparsegpt": lambda: tfc.oneshot.prune(model, calib, 0.7, **kw),
        "prune 70% magnitude": lambda: tfc.oneshot.prune(
            model, calib, 0.7, method="magnitude", **kw
        ),
        "prune 2:4 sparsegpt": lambda: tfc.oneshot.prune(model, calib, pattern="2:4", **kw),
        "prune 2:4 magnitude": lambda: tfc.oneshot.prune(
            model, calib, pattern="2:4", method="magnitude", **kw
        ),
        "quantize 4-bit gptq": lambda: tfc.oneshot.quantize(model, calib, 4, **kw),
        "quantize 4-bit rtn": lambda: tfc.oneshot.quantize(model, calib, 4, method="rtn", **kw),
        "quantize 4-bit gptq (Dense per tensor)": lambda: tfc.oneshot.quantize(
            model, calib, 4, per_channel=False, **kw
        ),
        "compress 50% + 4-bit": lambda: tfc.oneshot.compress(
            model, calib, 0.5, 4, per_channel=False, **kw
        ),
    }
    for name, job in jobs.items():
        result, report = job()
        row = {
            "method": name,
            "accuracy": _accuracy(result, data),
            "mean_error": report.mean_error,
            "mean_baseline_error": report.mean_baseline_error,
            "seconds": report.seconds,
        }
        if "per tensor" in name or name.startswith("compress"):
            with tempfile.TemporaryDirectory() as folder:
                exported = tfc.tflite_export.export(
                    result,
                    Path(folder) / "model.tflite",
                    quantization="int8",
                    verify_data=data.x_test,
                    verify_labels=data.y_test,
                    verbose=0,
                )
            row["tflite_accuracy"] = exported.tflite_accuracy
            row["tflite_bytes"] = exported.bytes
        rows.append(row)
    return {"calibration_images": calibration, "seed": seed, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calibration", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result = run(args.calibration, args.seed)
    for row in result["rows"]:
        extra = ""
        if "mean_error" in row:
            extra = (
                f"  layer error {row['mean_error']:.4f} (baseline {row['mean_baseline_error']:.4f})"
            )
        if "tflite_accuracy" in row:
            extra += f"  TFLite {100 * row['tflite_accuracy']:.2f}% ({row['tflite_bytes']:,} B)"
        print(f"{row['method']:<40} {100 * row['accuracy']:6.2f}%{extra}")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
