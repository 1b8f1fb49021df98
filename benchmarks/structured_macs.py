"""Structured pruning at a MACs budget: L0 gates under a constraint vs L1 filter norm vs Taylor.

For each workload (the suite's digits CNN, MobileNetV2-style model and byte-level
language model: attention heads and FFN neurons), seed and
MACs target (a fraction of the dense model's MACs, as ``tfc.summary`` counts them),
three arms start from the suite's trained starting model and get the workload's
fine-tune budget (the same optimizer, steps and batches), then ``shrink_model``:

* ``l0``: ``add_l0_gates`` + ``L0MacsConstraint(target)`` during the fine-tune,
  then ``remove_l0_gates(target_macs=target, batchnorm_data=...)``: no training
  steps after the rounding, the BatchNorm statistics re-estimated on 512 training
  inputs (forward passes only; the gates' noise in training left them describing
  noisy activations);
* ``l1``: ``GradualPruning(granularity="channel")`` (the L1 norm of each filter,
  Li et al. 2017) on the same layers, and ``granularity="head"`` on attention
  layers, at the one fraction per layer whose MACs are the largest at most the
  target, on the suite's schedule (the fraction reached at 2/3 of the budget);
* ``taylor``: the same with ``criterion="taylor"`` (Molchanov et al. 2019,
  gradients from 256 training examples).

Reported per arm: test quality (accuracy; held-out bits per byte), the MACs fraction
after shrinking, fine-tune wall seconds; per workload (seed 0) the LiteRT float32 latency of each shrunk file as a
ratio to the dense file, all files timed interleaved in one run, one thread.

Run: python3 run.py bench structured_macs [--workloads ...] [--seeds ...] [--targets ...]
     [--starting-models DIR]  (a suite run's files/starting_models: reuse its trained weights)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import tfcompress as tfc
from tfcompress.bench.methods.budget import schedule_steps
from tfcompress.bench.metrics import latency_table
from tfcompress.bench.workloads import get_workload
from tfcompress.core.cpu import cpu_isa
from tfcompress.pruning.l0_graph import GateCosts, find_gates

RESULTS = Path(__file__).parent / "results"
METHODS = ("l0", "l1", "taylor")


def uniform_sparsity(model: keras.Model, target: float) -> tuple[float, list[str]]:
    """The smallest per-layer channel sparsity whose MACs fraction is at most ``target``."""
    gated = tfc.pruning.add_l0_gates(model)
    gates = find_gates(gated)
    costs = GateCosts(gated, gates)
    channels = costs.channels

    def fraction(sparsity: float) -> float:
        kept = channels - np.round(sparsity * channels)
        return costs.fraction(np.maximum(kept, 1) / channels)

    low, high = 0.0, 0.999
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if fraction(middle) > target else (low, middle)
    return high, costs.producers


def macs_fraction(model: keras.Model, dense_macs: int) -> float:
    return tfc.summary(model, print_fn=None).total_macs / dense_macs


def run_arm(workload, base: keras.Model, method: str, target: float, seed: int):
    start = time.perf_counter()
    if method == "l0":
        model = tfc.pruning.add_l0_gates(base)
        workload.compile_for_finetune(model)
        constraint = tfc.callbacks.L0MacsConstraint(target)
        workload.finetune(model, callbacks=[constraint], seed=seed)
        pruned, report = tfc.pruning.remove_l0_gates(
            model, target_macs=target, batchnorm_data=workload.calibration(512, seed)
        )
        notes = {
            "gates_macs_fraction": report.gates_macs_fraction,
            "rounded_channels": report.rounded_channels,
            "multiplier": constraint.multiplier,
        }
    else:
        sparsity, layers = uniform_sparsity(base, target)
        pruned = keras.models.clone_model(base)
        pruned.set_weights(base.get_weights())
        extra = {}
        if method == "taylor":
            extra = {"criterion": "taylor", "data": workload.calibration_pairs(256, seed)}
        end, frequency = schedule_steps(workload)
        attention = [
            name
            for name in layers
            if isinstance(base.get_layer(name), keras.layers.MultiHeadAttention)
        ]
        callbacks = []
        for granularity, chosen in (
            ("channel", [n for n in layers if n not in attention]),
            ("head", attention),
        ):
            if chosen:
                callbacks.append(
                    tfc.callbacks.GradualPruning(
                        sparsity,
                        begin_step=0,
                        end_step=end,
                        frequency=frequency,
                        granularity=granularity,
                        layers=chosen,
                        **extra,
                    )
                )
        workload.compile_for_finetune(pruned)
        workload.finetune(pruned, callbacks=callbacks, seed=seed)
        notes = {"sparsity": sparsity}
    seconds = time.perf_counter() - start
    small = tfc.shrink_model(pruned)
    return small, seconds, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workloads", nargs="+", default=["digits_cnn", "mobilenet_digits", "byte_lm"]
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--targets", nargs="+", type=float, default=[0.5, 0.25])
    parser.add_argument("--starting-models", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "structured_macs.json")
    args = parser.parse_args()
    results = {
        "machine": {"platform": platform.machine(), **cpu_isa()},
        "targets": args.targets,
        "seeds": args.seeds,
        "workloads": {},
    }
    folder = Path(tempfile.mkdtemp(prefix="structured_macs_"))
    for name in args.workloads:
        workload = get_workload(name)
        if args.starting_models is not None:
            workload.share_starting_models(args.starting_models)
        rows, files = [], {}
        for seed in args.seeds:
            base = workload.train(seed)
            dense_macs = tfc.summary(base, print_fn=None).total_macs
            dense = workload.evaluate(base)[workload.metric]
            rows.append({"seed": seed, "method": "dense", "target": 1.0, "quality": dense})
            if seed == args.seeds[0]:
                files["dense"] = folder / f"{name}_dense.tflite"
                tfc.tflite_export.export(base, files["dense"], verify=False)
            for target in args.targets:
                for method in METHODS:
                    small, seconds, notes = run_arm(workload, base, method, target, seed)
                    row = {
                        "seed": seed,
                        "method": method,
                        "target": target,
                        "quality": workload.evaluate(small)[workload.metric],
                        "macs_fraction": macs_fraction(small, dense_macs),
                        "finetune_seconds": seconds,
                        **notes,
                    }
                    rows.append(row)
                    print(json.dumps({"workload": name, **row}), flush=True)
                    if seed == args.seeds[0]:
                        key = f"{method}@{target}"
                        files[key] = folder / f"{name}_{method}_{target}.tflite"
                        tfc.tflite_export.export(small, files[key], verify=False)
        sample = workload.data().x_test[:1]
        latency = latency_table(files, sample, baseline="dense", rounds=7)
        results["workloads"][name] = {"metric": workload.metric, "rows": rows, "latency": latency}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(markdown(results))


def markdown(results: dict) -> str:
    lines = [
        "| workload | target MACs | method | quality (mean ± sd) | MACs after shrink | "
        "LiteRT latency vs dense | fine-tune s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, found in results["workloads"].items():
        rows = found["rows"]
        scale, digits = (100, 1) if found["metric"] == "accuracy" else (1, 3)

        def spread(values, scale=scale, digits=digits):
            return f"{scale * np.mean(values):.{digits}f} ± {scale * np.std(values):.{digits}f}"

        dense = [r["quality"] for r in rows if r["method"] == "dense"]
        lines.append(f"| {name} | 1.0 | dense | {spread(dense)} | 1.000 | 1.00x | |")
        for target in results["targets"]:
            for method in METHODS:
                chosen = [r for r in rows if r["method"] == method and r["target"] == target]
                quality = [r["quality"] for r in chosen]
                macs = [r["macs_fraction"] for r in chosen]
                arm = found["latency"]["arms"].get(f"{method}@{target}", {})
                ratio = arm.get("ratio_median")
                lines.append(
                    f"| {name} | {target} | {method} | {spread(quality)} | {np.mean(macs):.3f} | "
                    f"{'' if ratio is None else f'{ratio:.2f}x'} | "
                    f"{np.mean([r['finetune_seconds'] for r in chosen]):.1f} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
