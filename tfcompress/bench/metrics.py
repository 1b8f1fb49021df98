"""What the suite measures on a model, as ShrinkBench proposed: parameters (all and
non-zero), theoretical cost (MACs, and MACs of the non-zero weights), stored bytes
(.tflite and gzip of it), and LiteRT latency (one thread, arms interleaved)."""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfcompress.bench.timing import time_arms
from tfcompress.export.converter import is_quantization_aware
from tfcompress.export.interpreter import TFLiteModel
from tfcompress.export.tflite import export as export_tflite
from tfcompress.reporting.summary import summary

__all__ = ["export_arm", "latency_table", "model_stats"]


def model_stats(model: keras.Model) -> dict:
    """Parameters, non-zero parameters and MACs (dense, and of the non-zero weights).

    ``effective_macs`` scales each layer's MACs by its weights' density, the
    theoretical cost of a sparse model that ShrinkBench's "theoretical
    speedup" divides by.
    """
    table = summary(model, print_fn=None)
    nonzero = sum(int(np.count_nonzero(w)) for w in model.get_weights())
    effective = 0.0
    for row in table.layers:
        if row.macs:
            effective += row.macs * (1.0 - (row.sparsity or 0.0))
    return {
        "params": int(model.count_params()),
        "nonzero_params": nonzero,
        "macs": int(table.total_macs),
        "effective_macs": round(effective),
        "finite": bool(all(np.all(np.isfinite(w)) for w in model.get_weights())),
    }


def export_arm(
    model: keras.Model,
    path: Path,
    quantization: str | None,
    workload: Any,
    seed: int = 0,
    calibrate: bool | None = None,
) -> dict:
    """Exports ``model`` to ``path``, verifies it on test inputs, returns sizes and parity.

    ``calibrate`` (int8 only): None calibrates unless the model is quantization-aware
    (it exports with the ranges it learned); True always (see ``Compressed.calibrate``).
    """
    data = workload.data()
    if calibrate is None:
        calibrate = not is_quantization_aware(model)
    calibrate = quantization == "int8" and calibrate
    representative = workload.calibration(64, seed=seed) if calibrate else None
    report = export_tflite(
        model,
        path,
        quantization=quantization,
        representative_data=representative,
        verify=True,
        verify_data=data.x_test[:16],
        max_verify_samples=16,
        verbose=0,
    )
    return {
        "tflite_bytes": int(report.bytes),
        "gzip_bytes": int(report.gzip_bytes),
        "verified": bool(report.verified),
        "max_abs_diff": None if report.max_abs_diff is None else float(report.max_abs_diff),
        "sparse_encoding": bool(report.sparse_encoding),
    }


def file_sizes(path: Path) -> dict:
    """Bytes and gzip bytes of a file written by someone else (a subprocess method)."""
    raw = Path(path).read_bytes()
    return {"tflite_bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, 9))}


def latency_table(
    files: dict[str, Path],
    sample: np.ndarray,
    baseline: str,
    rounds: int = 5,
    target_seconds: float = 0.02,
) -> dict:
    """LiteRT latency of each file, one thread, arms interleaved; ratios to ``baseline``.

    Each sample is ``number`` back-to-back invokes (``number`` chosen so the
    baseline's block takes about ``target_seconds``), averaged: invokes far
    shorter than a timer tick stay measurable.

    Returns:
        ``{"settings", "conditions", "arms": {name: {min_ms, median_ms,
        ratio_min, ratio_median}}}``; ratios are arm time / baseline time.
    """
    invokers = {
        name: TFLiteModel(path, num_threads=1).invoker(sample) for name, path in files.items()
    }
    probe = invokers[baseline]
    probe()
    import time

    start = time.perf_counter()
    probe()
    once = max(time.perf_counter() - start, 1e-6)
    number = max(1, min(200, math.ceil(target_seconds / once)))
    timing = time_arms(
        invokers, baseline=baseline, rounds=rounds, number=number, warmup=1, reduce="mean"
    )
    arms = {}
    for name in files:
        arms[name] = {
            "min_ms": 1000 * timing.min(name),
            "median_ms": 1000 * timing.median(name),
            "ratio_min": timing.ratio(name, stat="min"),
            "ratio_median": timing.ratio(name, stat="median"),
        }
    return {"settings": timing.settings, "conditions": timing.conditions, "arms": arms}
