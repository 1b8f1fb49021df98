"""How long one-shot compression takes: the whole byte-level LM, and one layer by width.

1. ``tfcompress.language_model.byte_lm()`` (677k parameters; weights as built,
   or the shipped trained ones when present) compressed end to end by
   ``tfc.oneshot.prune`` (SparseGPT 50% and 2:4, magnitude), ``quantize`` (GPTQ
   4-bit) and ``compress`` (50% + 4-bit), on ``--samples`` calibration windows
   of 128 bytes; wall time of each call and its per-layer solve times.
2. One square Dense layer of width 128, 256 and 512 with the LM's number of
   calibration vectors (samples x 128): time to accumulate ``X^T X``, to factor
   the dampened inverse, and to run SparseGPT, GPTQ and exact OBS (OBS on the
   narrow ones only: it grows as ``R C^3``).

One run, numbers printed as a table and JSON; timings on shared cores are
noisy (compare widths within a run).

    .venv/bin/python benchmarks/oneshot_speed.py [--samples 256] [--skip-lm]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import tfcompress as tfc
from tfcompress import language_model as lm
from tfcompress.oneshot.engine import Settings, solve_layer
from tfcompress.oneshot.grid import GridSpec
from tfcompress.oneshot.hessian import HessianSum, inverse_cholesky, single_threaded_blas

LM_LAYERS = ["Dense", "MultiHeadAttention"]


def _lm():
    try:
        return lm.load_byte_lm(), "trained"
    except FileNotFoundError:
        return lm.byte_lm(), "untrained (no shipped weights)"


def lm_timings(samples: int = 256, seed: int = 0) -> dict:
    """Wall time of each one-shot call on the whole byte LM."""
    model, weights = _lm()
    corpus = tfc.datasets.load_text_corpus()
    x, _ = lm.sample_windows(corpus.train, samples, seed=seed)
    kw = {"verbose": 0, "return_report": True}
    runs = {
        "prune sparsegpt 50%": lambda: tfc.oneshot.prune(model, x, 0.5, layers=LM_LAYERS, **kw),
        "prune sparsegpt 2:4": lambda: tfc.oneshot.prune(
            model, x, pattern="2:4", layers=LM_LAYERS, **kw
        ),
        "prune magnitude 50%": lambda: tfc.oneshot.prune(
            model, x, 0.5, method="magnitude", layers=LM_LAYERS, **kw
        ),
        "quantize gptq 4-bit": lambda: tfc.oneshot.quantize(model, x, 4, layers=LM_LAYERS, **kw),
        "compress 50% + 4-bit": lambda: tfc.oneshot.compress(
            model, x, 0.5, 4, layers=LM_LAYERS, **kw
        ),
    }
    result = {"weights": weights, "samples": samples, "runs": {}}
    for name, call in runs.items():
        began = time.perf_counter()
        _, report = call()
        seconds = time.perf_counter() - began
        by_width: dict[int, list[float]] = {}
        for layer in report.layers:
            by_width.setdefault(layer.columns, []).append(layer.seconds)
        result["runs"][name] = {
            "seconds": seconds,
            "capture_seconds": report.capture_seconds,
            "passes": report.passes,
            "peak_layer_mib": report.peak_layer_bytes / 2**20,
            "mean_error": report.mean_error,
            "mean_baseline_error": report.mean_baseline_error,
            "solve_seconds_by_input_width": {
                str(w): {"layers": len(t), "mean": float(np.mean(t)), "max": float(np.max(t))}
                for w, t in sorted(by_width.items())
            },
        }
    return result


def layer_timings(widths=(128, 256, 512), vectors: int = 32768, seed: int = 0) -> dict:
    """Per-stage seconds for one square Dense layer of each width."""
    rng = np.random.default_rng(seed)
    result = {}
    for width in widths:
        latent = rng.normal(size=(vectors, width // 4)).astype(np.float32)
        x = latent @ rng.normal(size=(width // 4, width)).astype(np.float32)
        x += 0.3 * rng.normal(size=x.shape).astype(np.float32)
        w = rng.normal(size=(1, width, width)).astype(np.float32)
        times = {}
        began = time.perf_counter()
        acc = HessianSum(1, width)
        with single_threaded_blas():  # as tfc.oneshot runs it
            for start in range(0, vectors, 4096):
                acc.add_rows(x[start : start + 4096])
            h = acc.hessian()
            times["hessian"] = time.perf_counter() - began
            began = time.perf_counter()
            inverse_cholesky(h)
            times["factor"] = time.perf_counter() - began
        errors = {}
        for label, settings in [
            ("sparsegpt", Settings("prune", "sparsegpt", sparsity=0.5)),
            ("sparsegpt 2:4", Settings("prune", "sparsegpt", sparsity=0.5, pattern=_nm())),
            ("gptq", Settings("quantize", "gptq", grid=GridSpec(4))),
            ("obs", Settings("prune", "obs", sparsity=0.5)),
        ]:
            if label == "obs" and width > 256:
                continue
            began = time.perf_counter()
            solution = solve_layer(w, h, settings)
            times[label] = time.perf_counter() - began  # includes the factorisation
            errors[label] = {"error": solution.error, "baseline": solution.baseline_error}
        result[str(width)] = {"seconds": times, "errors": errors}
    return result


def _nm():
    from tfcompress.oneshot.solvers import NMPattern

    return NMPattern(2, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--skip-lm", action="store_true")
    args = parser.parse_args()
    out = {"layers": layer_timings(vectors=args.samples * 128)}
    for width, row in out["layers"].items():
        times = ", ".join(f"{k} {v:.3f}s" for k, v in row["seconds"].items())
        print(f"width {width}: {times}")
        for k, v in row["errors"].items():
            print(f"    {k}: error {v['error']:.4f} (baseline {v['baseline']:.4f})")
    if not args.skip_lm:
        out["lm"] = lm_timings(args.samples)
        for name, run in out["lm"]["runs"].items():
            widths = ", ".join(
                f"{w}: {v['mean']:.3f}s" for w, v in run["solve_seconds_by_input_width"].items()
            )
            print(
                f"{name:<22} {run['seconds']:6.1f} s ({run['capture_seconds']:.1f} s capture, "
                f"{run['passes']} passes), error {run['mean_error']:.4f} vs baseline "
                f"{run['mean_baseline_error']:.4f}; solve per layer by input width: {widths}"
            )
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
