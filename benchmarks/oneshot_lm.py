"""One-shot compression of the shipped byte-level LM, no fine-tuning: bits per byte.

Loads ``tfcompress.language_model.load_byte_lm()`` (the trained 677k-parameter
decoder), draws ``--calibration`` windows of 128 bytes from the training text
per seed, and compresses its linear layers (attention projections, FFN, head;
not the byte embedding) with each method. Reports held-out bits per byte
(``--eval`` windows of the test split), the increase over float, and each
call's wall time:

* pruning 50% and 2:4: SparseGPT vs one-shot magnitude;
* 4- and 3-bit weights (weight-only, per output channel): GPTQ vs round-to-nearest.

Mean and spread over ``--seeds`` calibration samplings. No thresholds.

    .venv/bin/python benchmarks/oneshot_lm.py [--seeds 3] [--calibration 128] [--eval 512]
"""

from __future__ import annotations

import argparse
import json
import time

import keras
import numpy as np

import tfcompress as tfc
from tfcompress import language_model as lm


def _linear(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense))


KW = {"verbose": 0, "return_report": True}
ARMS = {
    "sparsegpt 50%": lambda m, x: tfc.oneshot.prune(m, x, 0.5, layers=_linear, **KW),
    "magnitude 50%": lambda m, x: tfc.oneshot.prune(
        m, x, 0.5, method="magnitude", layers=_linear, **KW
    ),
    "sparsegpt 2:4": lambda m, x: tfc.oneshot.prune(m, x, pattern="2:4", layers=_linear, **KW),
    "magnitude 2:4": lambda m, x: tfc.oneshot.prune(
        m, x, pattern="2:4", method="magnitude", layers=_linear, **KW
    ),
    "gptq 4-bit": lambda m, x: tfc.oneshot.quantize(
        m, x, 4, layers=_linear, activations=False, **KW
    ),
    "rtn 4-bit": lambda m, x: tfc.oneshot.quantize(
        m, x, 4, method="rtn", layers=_linear, activations=False, **KW
    ),
    "gptq 3-bit": lambda m, x: tfc.oneshot.quantize(
        m, x, 3, layers=_linear, activations=False, **KW
    ),
    "rtn 3-bit": lambda m, x: tfc.oneshot.quantize(
        m, x, 3, method="rtn", layers=_linear, activations=False, **KW
    ),
}


def run(seeds: int = 3, calibration: int = 128, eval_windows: int = 512) -> dict:
    """Every arm on every calibration sampling; bits per byte on the same held-out windows."""
    model = lm.load_byte_lm()
    corpus = tfc.datasets.load_text_corpus()
    x_test, y_test = lm.eval_windows(corpus.test, limit=eval_windows)
    float_bpb, _ = lm.bits_per_byte(model, x_test, y_test)
    results: dict[str, list[dict]] = {name: [] for name in ARMS}
    for seed in range(seeds):
        x, _ = lm.sample_windows(corpus.train, calibration, seed=seed)
        for name, arm in ARMS.items():
            began = time.perf_counter()
            compressed, report = arm(model, x)
            seconds = time.perf_counter() - began
            bpb, _ = lm.bits_per_byte(compressed, x_test, y_test)
            results[name].append(
                {
                    "seed": seed,
                    "bits_per_byte": bpb,
                    "increase": bpb - float_bpb,
                    "seconds": seconds,
                    "mean_layer_error": report.mean_error,
                    "mean_baseline_error": report.mean_baseline_error,
                }
            )
    summary = {
        name: {
            "increase_mean": float(np.mean([r["increase"] for r in rows])),
            "increase_std": float(np.std([r["increase"] for r in rows])),
            "seconds_mean": float(np.mean([r["seconds"] for r in rows])),
        }
        for name, rows in results.items()
    }
    return {
        "float_bits_per_byte": float_bpb,
        "calibration_windows": calibration,
        "eval_windows": len(x_test),
        "seeds": seeds,
        "summary": summary,
        "runs": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--calibration", type=int, default=128)
    parser.add_argument("--eval", type=int, default=512)
    args = parser.parse_args()
    result = run(args.seeds, args.calibration, args.eval)
    print(f"float: {result['float_bits_per_byte']:.4f} bits/byte")
    for name, row in result["summary"].items():
        print(
            f"{name:<16} +{row['increase_mean']:.4f} +- {row['increase_std']:.4f} bits/byte  "
            f"({row['seconds_mean']:.1f} s per call)"
        )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
