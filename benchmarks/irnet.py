"""IR-Net (Libra-PB + EDE) vs ste_sign and the repo's binary recipe on the binary digits CNN.

Run: python benchmarks/irnet.py [--epochs 15] [--seeds 0 1 2] [--arms ...]

Every arm trains ``tfc.models.digits_binary_cnn`` (conv 32/64/128, dense 128,
logits, BatchNormalization; conv2, conv3 and dense1 binary in weights and
inputs) from scratch on the bundled digits with the same budget: Adam 1e-2,
batch 32, the same epochs, the same seeds (one seed sets the initial weights
and the batch order of every arm). Only the quantizers differ:

* ``ste_sign``: ``kernel_quantizer="ste_sign"``, ``input_quantizer="ste_sign"``
  (BNN: plain signs, clipped straight-through gradient);
* ``xnor (repo recipe)``: ``"magnitude_aware_sign"`` kernels (per-channel mean
  |w| scale) with ``"ste_sign"`` inputs, the default of ``digits_binary_cnn``
  and of ``benchmarks/binary.py`` (docs/binary.md);
* ``irnet``: ``"irnet"`` kernels (Libra-PB) with ``"irnet_sign"`` inputs, the
  EDE temperature driven from 0.1 to 10 over the run by ``IRNetSchedule``;
* ``irnet weights only`` (ablation, not in the default arms): ``"irnet"``
  kernels with ``"ste_sign"`` inputs;
* ``md_tanh`` (not in the default arms): mirror-descent relaxed kernels,
  ``tanh(beta x)`` in training with ``beta`` from 1 to 1000 over the run
  (``QuantizerSchedule``), the sign at inference, with ``"ste_sign"`` inputs.

Reports the test accuracy (359 digits) per seed, and mean and sample standard
deviation (ddof=1) per arm; writes benchmarks/results/irnet.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from tfcompress.core.io import write_text
from tfcompress.datasets import load_digits
from tfcompress.models import accuracy, digits_binary_cnn, train_classifier
from tfcompress.quantization.schedule import QuantizerSchedule
from tfcompress.reporting.table import format_table

RESULTS = Path(__file__).parent / "results" / "irnet.json"
LEARNING_RATE = 1e-2

# name -> (kernel_quantizer, input_quantizer, drive the progress with QuantizerSchedule)
ARMS = {
    "ste_sign": ("ste_sign", "ste_sign", False),
    "xnor (repo recipe)": ("magnitude_aware_sign", "ste_sign", False),
    "irnet": ("irnet", "irnet_sign", True),
    "irnet weights only": ("irnet", "ste_sign", True),
    "md_tanh": ("md_tanh", "ste_sign", True),
}
DEFAULT_ARMS = ["ste_sign", "xnor (repo recipe)", "irnet"]


def run_arm(name: str, data, epochs: int, seed: int, arms: dict | None = None) -> dict:
    kernel_quantizer, input_quantizer, schedule = (arms or ARMS)[name]
    keras.utils.set_random_seed(seed)
    model = digits_binary_cnn(kernel_quantizer=kernel_quantizer, input_quantizer=input_quantizer)
    callbacks = [QuantizerSchedule()] if schedule else []
    start = time.perf_counter()
    history = train_classifier(
        model, data, epochs=epochs, learning_rate=LEARNING_RATE, verbose=0, callbacks=callbacks
    )
    train_s = time.perf_counter() - start
    return {
        "arm": name,
        "seed": seed,
        "test_accuracy": accuracy(model, data.x_test, data.y_test),
        "final_train_accuracy": float(history.history["accuracy"][-1]),
        "final_train_loss": float(history.history["loss"][-1]),
        "train_s": train_s,
    }


def summarize(runs: list[dict], arms: list[str], table: dict | None = None) -> list[dict]:
    table = table or ARMS
    rows = []
    for name in arms:
        accs = np.array([r["test_accuracy"] for r in runs if r["arm"] == name])
        rows.append(
            {
                "arm": name,
                "kernel_quantizer": str(table[name][0]),
                "input_quantizer": str(table[name][1]),
                "seeds": len(accs),
                "mean_test_accuracy": float(accs.mean()),
                "std_test_accuracy": float(accs.std(ddof=1)) if len(accs) > 1 else 0.0,
                "per_seed": [float(a) for a in accs],
                "mean_train_s": float(np.mean([r["train_s"] for r in runs if r["arm"] == name])),
            }
        )
    return rows


def compare(
    argv: list[str] | None,
    *,
    arms: dict,
    default_arms: list[str],
    benchmark: str,
    description: str,
    title: str,
    results: Path,
    epochs: int = 15,
) -> int:
    """Trains every arm of ``arms`` from scratch per seed (arms interleaved) and reports.

    ``arms`` maps a name to ``(kernel_quantizer, input_quantizer, drive QuantizerSchedule)``
    for :func:`tfcompress.models.digits_binary_cnn`; everything else is the same budget.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", choices=sorted(arms), default=default_arms)
    parser.add_argument("--output", type=Path, default=results)
    args = parser.parse_args(argv)
    data = load_digits()
    runs = []
    # Seeds outermost, arms interleaved: machine-load drift hits every arm alike.
    for seed in args.seeds:
        for name in args.arms:
            run = run_arm(name, data, args.epochs, seed, arms)
            print(
                f"seed {seed} {name:>20}: test {100 * run['test_accuracy']:.2f}% "
                f"(train {100 * run['final_train_accuracy']:.2f}%, {run['train_s']:.1f} s)",
                flush=True,
            )
            runs.append(run)
    rows = summarize(runs, args.arms, arms)
    table = [
        [
            r["arm"],
            r["kernel_quantizer"],
            r["input_quantizer"],
            f"{100 * r['mean_test_accuracy']:.2f} ± {100 * r['std_test_accuracy']:.2f}",
            " / ".join(f"{100 * a:.2f}" for a in r["per_seed"]),
            round(r["mean_train_s"], 1),
        ]
        for r in rows
    ]
    headers = ["arm", "kernel", "inputs", "test acc % (mean ± std)", "per seed", "train s"]
    title = (
        f"{title}: {args.epochs} epochs, Adam {LEARNING_RATE}, "
        f"seeds {' '.join(map(str, args.seeds))}"
    )
    print(format_table(table, headers, title=title))
    script = f"benchmarks/{benchmark}.py"
    report = {
        "benchmark": benchmark,
        "command": f"python {script} " + " ".join(sys.argv[1:] if argv is None else argv),
        "epochs": args.epochs,
        "seeds": args.seeds,
        "optimizer": f"Adam({LEARNING_RATE}), batch 32",
        "backend": keras.backend.backend(),
        "rows": rows,
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.output, json.dumps(report, indent=2))
    print(f"wrote {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return compare(
        argv,
        arms=ARMS,
        default_arms=DEFAULT_ARMS,
        benchmark="irnet",
        description=__doc__,
        title="Binary digits CNN from scratch",
        results=RESULTS,
    )


if __name__ == "__main__":
    sys.exit(main())
