"""One-shot compression at scale: a 100M-parameter decoder, layer by layer, time and memory.

Builds ``tfcompress.language_model.byte_lm`` (GPT-style byte-level decoder; seeded random
weights) at ``--d-model 1024 --layers 8 --heads 16`` with FFN ``4 x d_model`` by default
(101,427,456 parameters) and runs ``tfc.oneshot.prune(..., sparsity=0.5, method="sparsegpt")``
(or ``--method gptq``: ``tfc.oneshot.quantize(..., bits=4, activations=False)``) on
``--calibration`` random byte windows over its attention projections, FFN and head.

Memory: the resident set (RSS) is read after importing TensorFlow and tfcompress and a tiny
warm-up one-shot run (the baseline), then sampled from ``/proc/self/statm`` every ~50 ms
while the model is built and compressed; ``ru_maxrss`` after the run catches a peak the
sampler missed. The increment over the baseline is checked against the bound of issue #25:

    2 x weight bytes (float32 parameters: the model and the engine's copy)
    + the largest layer Hessian (columns x columns float64; 4 d_model for the FFN down projection)

Each sample is also charged to a phase (the peak increment of each is reported): ``build``
(the model), ``copy`` (checks and the engine's working copy, up to the first calibration
pass), ``capture`` (inside a forward pass), ``solve`` (inside one layer's numerics) and
``other`` (writing weights back; the masks and the report at the end).

Where the memory goes (this machine, TensorFlow CPU with oneDNN, default settings): build
and copy alone reach 2 W + ~110 MiB (TensorFlow's allocator keeps its peak, e.g. the
initialisation temporaries), 2 W + H leaves ~20 MiB for everything else. Capture passes run
the graph node by node from where the previous pass stopped
(:class:`tfcompress.core.graph_runner.GraphRunner`), so they hold the activations kept
between passes (``cached_activation_bytes``: 40 MiB here) and one node's temporaries (the
FFN's GELU at 16 x 128 x 4096 is the largest; ``--batch-size 4`` quarters it), on top of the
layer's Hessian sum. A layer's solve adds half a Hessian (the float32 factor) and a few
weight-sized arrays. Pruning gives the result a uint8 mask per kernel (W / 4, at the end).

Also reported: the engine's own ``peak_layer_bytes`` estimate, total / capture / solve
seconds, seconds per layer, the sparsity reached in the compressed kernels and the machine's
conditions (CPU, cores, load). Writes a table to stdout and JSON to ``--out``.

    .venv/bin/python benchmarks/oneshot_scale.py [--d-model 1024 --layers 8 --heads 16]
        [--context 128 --calibration 16 --method sparsegpt --out PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import tfcompress as tfc
from tfcompress import language_model as lm
from tfcompress.bench.timing import machine_conditions
from tfcompress.core.io import write_text
from tfcompress.oneshot.targets import find_layer
from tfcompress.reporting import format_table

RESULTS = Path(__file__).parent / "results" / "oneshot_scale.json"
MIB = 2**20
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _linear(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense))


def current_rss() -> int:
    """Resident bytes now (``/proc/self/statm``, Linux)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * _PAGE


def max_rss() -> int:
    """The process' resident high-water mark in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class RssSampler:
    """Samples :func:`current_rss` every ``interval`` seconds in a daemon thread; keeps the max.

    Each sample is also charged to the current ``phase`` (set by :func:`phases`), whose own
    maximum is kept in ``by_phase``.
    """

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak, self.samples = interval, current_rss(), 0
        self.phase = "build"
        self.by_phase: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        rss = current_rss()
        self.peak = max(self.peak, rss)
        self.by_phase[self.phase] = max(self.by_phase.get(self.phase, 0), rss)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()
            self.samples += 1

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


@contextlib.contextmanager
def phases(sampler: RssSampler) -> Iterator[None]:
    """Charges RSS samples to what the engine is doing: capture passes, layer solves, the rest.

    Wraps ``tfcompress.oneshot.sequential.forward`` and ``advance`` (one calibration batch
    through the working copy, whole or from where the last pass stopped) and ``tfcompress.oneshot.engine.solve_layer`` (one layer's numerics) for the run;
    ``copy`` is everything before the first pass (checks, the working copy), ``other`` the time
    between (writing weights back, masks and the report at the end).
    """
    from tfcompress.oneshot import engine, sequential

    saved = sequential.forward, sequential.advance, engine.solve_layer

    def charged(phase: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            sampler.sample()
            sampler.phase = phase
            try:
                return function(*args, **kwargs)
            finally:
                sampler.sample()
                sampler.phase = "other"

        return call

    sequential.forward = charged("capture", saved[0])
    sequential.advance = charged("capture", saved[1])
    engine.solve_layer = charged("solve", saved[2])
    try:
        yield
    finally:
        sequential.forward, sequential.advance, engine.solve_layer = saved


def windows(count: int, context: int, seed: int) -> np.ndarray:
    """``count`` random byte windows: int32 token ids in [0, 256)."""
    return np.random.default_rng(seed).integers(0, 256, (count, context), dtype=np.int32)


def warm_up() -> None:
    """A tiny one-shot run, so TF kernels and lazy imports are in the baseline, not the peak."""
    tiny = lm.byte_lm(context=8, d_model=16, num_layers=1, num_heads=2, ffn_units=32)
    tfc.oneshot.prune(tiny, windows(2, 8, 0), 0.5, layers=_linear, verbose=0)
    del tiny
    gc.collect()


def kernel_sparsity(model: keras.Model, names: list[str]) -> float:
    """Fraction of zeros over the kernels of the compressed layers."""
    zeros = total = 0
    for name in names:
        kernel = find_layer(model, name).kernel.numpy()
        zeros += int(np.count_nonzero(kernel == 0))
        total += kernel.size
    return zeros / max(total, 1)


def run(args: argparse.Namespace) -> dict:
    conditions = machine_conditions()
    keras.utils.set_random_seed(args.seed)
    warm_up()
    baseline, maxrss_before = current_rss(), max_rss()
    calibration = windows(args.calibration, args.context, args.seed)
    kw = {"layers": _linear, "verbose": args.verbose, "return_report": True}
    with RssSampler() as sampler:
        began = time.perf_counter()
        model = lm.byte_lm(args.context, args.d_model, args.layers, args.heads, args.ffn)
        build_seconds = time.perf_counter() - began
        after_build = current_rss()
        sampler.sample()
        sampler.phase = "copy"
        with phases(sampler):
            if args.method == "gptq":
                result, report = tfc.oneshot.quantize(
                    model, calibration, 4, activations=False, batch_size=args.batch_size, **kw
                )
            else:
                result, report = tfc.oneshot.prune(
                    model, calibration, 0.5, method="sparsegpt", batch_size=args.batch_size, **kw
                )
    maxrss_after = max_rss()
    # ru_maxrss only rises when RSS exceeds every earlier value: then it is the true peak.
    peak = max(sampler.peak, maxrss_after) if maxrss_after > maxrss_before else sampler.peak
    params = model.count_params()
    weight_bytes = params * 4
    hessian_bytes = max(r.problems * r.columns**2 * 8 for r in report.layers)
    bound = 2 * weight_bytes + hessian_bytes
    increment = peak - baseline
    layers = [r.as_dict() for r in report.layers]
    by_width: dict[int, list[float]] = {}
    for r in report.layers:
        by_width.setdefault(r.columns, []).append(r.seconds)
    solve_seconds = report.seconds - report.capture_seconds
    return {
        "config": {
            "d_model": args.d_model,
            "layers": args.layers,
            "heads": args.heads,
            "ffn_units": args.ffn,
            "context": args.context,
            "calibration_windows": args.calibration,
            "batch_size": args.batch_size,
            "method": args.method,
            "seed": args.seed,
        },
        "parameters": params,
        "weight_bytes": weight_bytes,
        "largest_hessian_bytes": hessian_bytes,
        "bound_bytes": bound,
        "rss_baseline_bytes": baseline,
        "rss_after_build_bytes": after_build,
        "build_increment_bytes": after_build - baseline,
        "rss_peak_sampled_bytes": sampler.peak,
        "peak_increment_by_phase_bytes": {
            phase: rss - baseline for phase, rss in sampler.by_phase.items()
        },
        "rss_samples": sampler.samples,
        "ru_maxrss_before_bytes": maxrss_before,
        "ru_maxrss_after_bytes": maxrss_after,
        "engine_peak_rss_bytes": report.peak_rss_bytes,
        "rss_peak_bytes": peak,
        "peak_increment_bytes": increment,
        "within_bound": increment <= bound,
        "increment_over_bound": increment / bound,
        "engine_peak_layer_bytes": report.peak_layer_bytes,
        "cached_activation_bytes": report.cached_activation_bytes,
        "build_seconds": build_seconds,
        "seconds": report.seconds,
        "capture_seconds": report.capture_seconds,
        "solve_seconds": solve_seconds,
        "passes": report.passes,
        "compressed_layers": len(report.layers),
        "seconds_per_layer": report.seconds / max(len(report.layers), 1),
        "solve_seconds_by_input_width": {
            str(w): {"layers": len(t), "mean": float(np.mean(t)), "max": float(np.max(t))}
            for w, t in sorted(by_width.items())
        },
        "sparsity": kernel_sparsity(result, [r.name for r in report.layers]),
        "mean_error": report.mean_error,
        "mean_baseline_error": report.mean_baseline_error,
        "conditions": {**conditions, "load_average_after": [round(v, 2) for v in os.getloadavg()]},
        "layer_reports": layers,
    }


def table(out: dict) -> str:
    c = out["config"]

    def mib(key: str) -> str:
        return f"{out[key] / MIB:,.1f} MiB"

    cpu = out["conditions"]
    rows = [
        ("model", f"byte_lm d={c['d_model']} L={c['layers']} h={c['heads']} ffn={c['ffn_units']}"),
        ("parameters", f"{out['parameters']:,}"),
        ("method", f"{c['method']} ({c['calibration_windows']} x {c['context']} bytes)"),
        ("weight bytes (float32)", mib("weight_bytes")),
        ("largest layer Hessian", mib("largest_hessian_bytes")),
        ("bound 2 W + H", mib("bound_bytes")),
        ("RSS baseline", mib("rss_baseline_bytes")),
        ("RSS after build (+)", mib("build_increment_bytes")),
        ("RSS peak", mib("rss_peak_bytes")),
        ("peak increment", mib("peak_increment_bytes")),
        ("increment / bound", f"{out['increment_over_bound']:.2f}"),
        ("within bound", "yes" if out["within_bound"] else "NO"),
        ("engine peak_layer_bytes", mib("engine_peak_layer_bytes")),
        ("activations kept between passes", mib("cached_activation_bytes")),
    ]
    rows += [
        (f"  peak increment, {phase}", f"{value / MIB:,.1f} MiB")
        for phase, value in out["peak_increment_by_phase_bytes"].items()
    ]
    rows += [
        ("build seconds", f"{out['build_seconds']:.1f}"),
        ("one-shot seconds", f"{out['seconds']:.1f}"),
        ("  capture / solve", f"{out['capture_seconds']:.1f} / {out['solve_seconds']:.1f}"),
        ("  passes, layers", f"{out['passes']}, {out['compressed_layers']}"),
        ("seconds per layer", f"{out['seconds_per_layer']:.2f}"),
        ("kernel sparsity", f"{out['sparsity']:.4f}"),
        ("mean error (baseline)", f"{out['mean_error']:.4f} ({out['mean_baseline_error']:.4f})"),
        ("CPU", f"{cpu['cpu']['model']}, {cpu['cpu_count']} cores"),
        ("load average before/after", f"{cpu['load_average']} / {cpu['load_average_after']}"),
    ]
    rows += [
        (f"solve s, input width {w}", f"{v['mean']:.2f} mean, {v['max']:.2f} max ({v['layers']})")
        for w, v in out["solve_seconds_by_input_width"].items()
    ]
    return format_table(rows, ["quantity", "value"], title="One-shot at scale (issue #25)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d-model", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--ffn", type=int, default=None, help="FFN units (default 4 d_model)")
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--calibration", type=int, default=16, help="random byte windows")
    parser.add_argument(
        "--batch-size", type=int, default=32, help="calibration windows per forward pass"
    )
    parser.add_argument("--method", choices=["sparsegpt", "gptq"], default="sparsegpt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.ffn is None:
        args.ffn = 4 * args.d_model
    out = run(args)
    print(table(out))
    write_text(args.out, json.dumps(out, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
