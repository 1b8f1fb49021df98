"""Benchmark: FGSM/PGD robustness of float, int8 QAT and binary digits CNNs, with the vanishing flag.

Trains the digits CNN (float), its quantization-aware int8 copy (``quantize_model`` + fine-tune)
and the binary digits CNN from scratch, then runs ``tfc.reporting.robustness`` on each at a few
radii, plus a case built to mask its gradients: the float model with its logits multiplied by
1e4 (the same predictions, a saturated softmax). The flag must fire there and not on the float
model; the tempered attack's numbers are the ones to read when it fires.

    .venv/bin/python benchmarks/robustness.py [--epochs 8] [--eps 0.05 0.1 0.2] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np

import tfcompress as tfc
from tfcompress.bench.timing import machine_conditions
from tfcompress.core.io import write_text
from tfcompress.models import digits_binary_cnn, digits_cnn, train_classifier


def _models(data, epochs: int, seed: int) -> dict[str, keras.Model]:
    keras.utils.set_random_seed(seed)
    float_model = digits_cnn()
    train_classifier(float_model, data, epochs=epochs, verbose=0)
    qat = tfc.quantize_model(float_model)
    train_classifier(qat, data, epochs=max(1, epochs // 4), learning_rate=1e-4, verbose=0)
    keras.utils.set_random_seed(seed)
    binary = digits_binary_cnn()
    train_classifier(binary, data, epochs=epochs, learning_rate=1e-2, verbose=0)
    saturated = keras.Sequential([float_model, keras.layers.Rescaling(1e4)], name="saturated")
    return {
        "float": float_model,
        "int8 QAT": qat,
        "binary": binary,
        "float x 1e4 logits": saturated,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--eps", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="benchmarks/results/robustness.json")
    args = parser.parse_args()
    data = tfc.datasets.load_digits()
    conditions = machine_conditions()
    started = time.perf_counter()
    rows = []
    for seed in args.seeds:
        for name, model in _models(data, args.epochs, seed).items():
            for eps in args.eps:
                report = tfc.reporting.robustness(model, data, eps=eps, samples=None)
                rows.append({"model": name, "seed": seed, **report.as_dict()})
                print(f"seed {seed} {name} eps {eps}: {report.as_dict()}", flush=True)
    print(
        f"\n{'model':20} {'eps':>5} {'clean':>6} {'FGSM':>6} {'PGD':>6} {'T-PGD':>6} "
        f"{'vanished':>8} flag (mean over {len(args.seeds)} seeds)"
    )
    for name in dict.fromkeys(r["model"] for r in rows):
        for eps in args.eps:
            group = [r for r in rows if r["model"] == name and r["eps"] == eps]

            def mean(key, group=group):
                values = [r[key] for r in group if r[key] is not None]
                return float(np.mean(values)) if values else float("nan")

            flags = sum(r["vanishing"] for r in group)
            print(
                f"{name:20} {eps:5.2f} {mean('clean_accuracy'):6.3f} {mean('fgsm_accuracy'):6.3f} "
                f"{mean('pgd_accuracy'):6.3f} {mean('tempered_pgd_accuracy'):6.3f} "
                f"{mean('vanished_fraction'):8.3f} {flags}/{len(group)}"
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "robustness",
        "epochs": args.epochs,
        "conditions": conditions,
        "seconds": time.perf_counter() - started,
        "rows": rows,
    }
    write_text(out, json.dumps(document, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
