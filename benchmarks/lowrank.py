"""Low-rank factorization: parameters, MACs, accuracy and TFLite latency against the float model.

Two models on the bundled digits data:
* the digits CNN (``tfcompress.models.digits_cnn``, ~160k parameters);
* a Dense-heavy MLP on flattened 8x8 inputs, 64-1024-1024-1024-10 (~2.2M).

For each, ``factorize_model(target_ratio=r)`` for several ``r``, then a short
fine-tune. Per row: parameters, MACs (``tfc.summary``), test accuracy before
and after fine-tuning, TFLite bytes, and interpreter latency as a ratio to the
float model's file. Latency: ``num_threads=1``, every arm's interpreter
interleaved in one process, median of ``--runs`` invokes per round and the
minimum over ``--rounds`` rounds, at batch 1 (and the batch given by
``--batch``). Also an int8 (post-training, calibrated) export of each
factorized model: op kinds and TFLite accuracy.

Run: ``python3 run.py bench lowrank``
(``--quick`` for a smoke run). Writes ``benchmarks/results/lowrank.json`` and
``benchmarks/results/lowrank.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import tfcompress as tfc
from tfcompress.core.io import atomic_write, write_text
from tfcompress.datasets import load_digits
from tfcompress.lowrank.factorize import expand_lowrank
from tfcompress.models import accuracy, digits_cnn, digits_mlp, train_classifier
from tfcompress.reporting.table import format_table
from tfcompress.tflite_export import TFLiteModel, convert

RESULTS = Path(__file__).parent / "results"


def _latencies(files: dict[str, bytes], x: np.ndarray, rounds: int, runs: int) -> dict[str, float]:
    """Min over rounds of the median invoke time (ms), arms interleaved within each round."""
    models = {name: TFLiteModel(content, num_threads=1) for name, content in files.items()}
    best = dict.fromkeys(models, float("inf"))
    for _ in range(rounds):
        for name, lite in models.items():
            lite.predict(x, batch_size=len(x))  # warm-up for this batch shape
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                lite._run([x])
                times.append(time.perf_counter() - start)
            best[name] = min(best[name], 1000 * float(np.median(times)))
    return best


def _tflite_accuracy(content: bytes, data) -> float:
    logits = TFLiteModel(content).predict(data.x_test, batch_size=64)
    return float(np.mean(np.argmax(logits, -1) == data.y_test))


def _ops(content: bytes) -> dict[str, int]:
    return TFLiteModel(content).op_counts()


def run_model(name, build, data, epochs, ratios, fine_tune, batch, rounds, runs, lr, qat=False):
    keras.utils.set_random_seed(0)
    model = build()
    print(f"\n== {name}: training the float model ({model.count_params():,} params, {epochs} ep)")
    train_classifier(model, data, epochs=epochs)
    summary = tfc.summary(model, print_fn=None)
    float_acc = accuracy(model, data.x_test, data.y_test)
    # The fair reference for "after fine-tuning": the float model given the same extra epochs.
    keras.utils.set_random_seed(0)
    extra = keras.models.clone_model(model)
    extra.set_weights(model.get_weights())
    train_classifier(extra, data, epochs=fine_tune, learning_rate=lr)
    float_tuned = accuracy(extra, data.x_test, data.y_test)
    arms = {"float": (model, None)}
    rows = {
        "float": {
            "model": name,
            "arm": "float",
            "target_ratio": 1.0,
            "params": summary.total_params,
            "macs": summary.total_macs,
            "acc_before": float_acc,
            "acc_after": float_tuned,
        }
    }
    for ratio in ratios:
        keras.utils.set_random_seed(0)
        small, report = tfc.factorize_model(
            model, target_ratio=ratio, return_report=True, verbose=0
        )
        before = accuracy(small, data.x_test, data.y_test)
        start = time.perf_counter()
        train_classifier(small, data, epochs=fine_tune, learning_rate=lr)
        tune_s = time.perf_counter() - start
        s = tfc.summary(small, print_fn=None)
        arm = f"{ratio}x"
        arms[arm] = (small, report)
        rows[arm] = {
            "model": name,
            "arm": arm,
            "target_ratio": ratio,
            "params": s.total_params,
            "macs": s.total_macs,
            "acc_before": before,
            "acc_after": accuracy(small, data.x_test, data.y_test),
            "fine_tune_s": tune_s,
            "ranks": {f.name: f.rank for f in report.factorized},
            "skipped": [list(x) for x in report.skipped],
        }

    files = {arm: convert(m, None, verbose=0) for arm, (m, _) in arms.items()}
    for arm, content in files.items():
        row = rows[arm]
        row["tflite_bytes"] = len(content)
        row["tflite_acc"] = _tflite_accuracy(content, data)
        row["ops"] = _ops(content)
        if arm != "float":
            int8 = convert(arms[arm][0], "int8", data.x_train, calibration_samples=500, verbose=0)
            row["int8_bytes"] = len(int8)
            row["int8_acc"] = _tflite_accuracy(int8, data)
            row["int8_ops"] = _ops(int8)
            if qat:
                row.update(_qat_int8(arms[arm][0], data, epochs=2))
    for size in sorted({1, batch}):
        x = data.x_test[:size]
        lat = _latencies(files, x, rounds, runs)
        for arm, ms in lat.items():
            rows[arm][f"latency_ms_b{size}"] = ms
            rows[arm][f"speedup_b{size}"] = lat["float"] / ms
    base = rows["float"]
    for row in rows.values():
        row["param_ratio"] = row["params"] / base["params"]
        row["mac_ratio"] = row["macs"] / base["macs"]
        row["bytes_ratio"] = row["tflite_bytes"] / base["tflite_bytes"]
    return list(rows.values())


def _qat_int8(small, data, epochs):
    """Low-rank + QAT: the factors as stock layers, quantize_model, fine-tune, int8 export."""
    keras.utils.set_random_seed(0)
    qat = tfc.quantize_model(expand_lowrank(small))
    train_classifier(qat, data, epochs=epochs, learning_rate=5e-4)
    content = convert(qat, "int8", verbose=0)  # no representative data: QAT ranges
    return {
        "qat_int8_keras_acc": accuracy(qat, data.x_test, data.y_test),
        "qat_int8_acc": _tflite_accuracy(content, data),
        "qat_int8_bytes": len(content),
        "qat_int8_ops": _ops(content),
    }


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = sorted((r for r in rows if r["model"] == name), key=lambda r: r["param_ratio"])
        x = [r["param_ratio"] for r in mine]
        ax.plot(x, [100 * r["acc_after"] for r in mine], "o-", label=f"{name}, fine-tuned")
        ax.plot(x, [100 * r["acc_before"] for r in mine], "x--", label=f"{name}, SVD init only")
    ax.set_xlabel("parameters / float model's")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("factorize_model(target_ratio=...) on digits")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path) as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs, ratios and runs")
    parser.add_argument("--batch", type=int, default=16, help="second latency batch size")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    quick = args.quick
    ratios = [0.5, 0.25] if quick else [0.75, 0.5, 0.25, 0.125]
    rounds, runs = (2, 10) if quick else (args.rounds, args.runs)
    rows = []
    start = time.perf_counter()
    rows += run_model(
        "digits_cnn", digits_cnn, load_digits(), 2 if quick else 12, ratios,
        1 if quick else 3, args.batch, rounds, runs, 5e-4, qat=True,
    )  # fmt: skip
    rows += run_model(
        "mlp_1024x3", lambda: digits_mlp(hidden=(1024, 1024, 1024)), load_digits(flatten=True),
        2 if quick else 10, ratios, 1 if quick else 3, args.batch, rounds, runs, 2e-4,
    )  # fmt: skip
    elapsed = time.perf_counter() - start

    def pct(v):
        return round(100 * v, 2)

    b = args.batch
    table = [
        [
            r["model"], r["arm"], r["params"], round(r["param_ratio"], 3), round(r["mac_ratio"], 3),
            pct(r["acc_before"]), pct(r["acc_after"]), pct(r["tflite_acc"]),
            pct(r["int8_acc"]) if "int8_acc" in r else None,
            pct(r["qat_int8_acc"]) if "qat_int8_acc" in r else None,
            r.get("int8_bytes"), r["tflite_bytes"],
            round(r["latency_ms_b1"] * 1000, 1), round(r["speedup_b1"], 2),
            round(r[f"latency_ms_b{b}"] * 1000, 1), round(r[f"speedup_b{b}"], 2),
        ]
        for r in rows
    ]  # fmt: skip
    headers = [
        "model", "arm", "params", "params x", "MACs x", "acc SVD %", "acc tuned %",
        "TFLite acc %", "PTQ int8 acc %", "QAT int8 acc %", "PTQ int8 bytes", "TFLite bytes", "lat b1 us", "speedup b1",
        f"lat b{b} us", f"speedup b{b}",
    ]  # fmt: skip
    print()
    print(
        format_table(
            table,
            headers,
            title="Low-rank factorization (TFLite float32, num_threads=1; speedup = float / arm)",
        )
    )
    print("\nint8 (PTQ) op kinds of the factorized files:")
    for r in rows:
        if "int8_ops" in r:
            print(f"  {r['model']} {r['arm']}: {r['int8_ops']}")
        if "qat_int8_ops" in r:
            print(f"  {r['model']} {r['arm']} QAT: {r['qat_int8_ops']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "lowrank.json"
    meta = {"batch": b, "rounds": rounds, "runs": runs, "quick": quick, "seconds": elapsed}
    write_text(out, json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))
    _plot(rows, RESULTS / "lowrank.png")
    print(f"\nWrote {out} and {RESULTS / 'lowrank.png'} ({elapsed:.0f} s)")


if __name__ == "__main__":
    main()
