"""The one run behind ``prune``, ``quantize`` and ``compress``: copy, capture, solve, carry.

:func:`run` receives checked arguments (the entry points in
:mod:`tfcompress.oneshot.api` validate everything first) and

1. checks the calibration data against the model's inputs and plans the
   target layers (both raise before anything is copied);
2. copies the model (a plain clone, or ``quantize_model``'s copy when a
   ``Quant*`` layer will carry the grid);
3. runs the sequential capture (:mod:`tfcompress.oneshot.sequential`) and,
   after each group, solves each layer of it (:func:`solve_layer`) and writes
   the result into the copy;
4. attaches masks, sets grid steps and activation ranges, and fills the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import resource
import sys
import time
import warnings
from typing import Any

import keras
import numpy as np

from tfcompress.core.calibration import calibration_data
from tfcompress.core.rewrite import rewrite_model
from tfcompress.oneshot import carriers
from tfcompress.oneshot.grid import GridSpec
from tfcompress.oneshot.hessian import ACCUMULATE_COLUMNS, inverse_cholesky, single_threaded_blas
from tfcompress.oneshot.obs import OBS_CHUNK_BYTES, obs_prune
from tfcompress.oneshot.report import LayerReport, OneShotReport
from tfcompress.oneshot.rules import rule_for
from tfcompress.oneshot.sequential import Target, bypass_quantizers, run_sequential
from tfcompress.oneshot.solvers import (
    NMPattern,
    column_sweep,
    magnitude_mask,
    relative_error,
    round_to_nearest,
)
from tfcompress.oneshot.targets import find_layer, plan_targets

__all__ = ["Settings", "run", "solve_layer"]


@dataclasses.dataclass(frozen=True)
class Settings:
    """Checked arguments of one run.

    Attributes:
        operation: ``"prune"``, ``"quantize"`` or ``"compress"``.
        method: Pruning method (``"sparsegpt"``, ``"obs"``, ``"magnitude"``)
            or quantization method (``"gptq"``, ``"rtn"``).
        sparsity: Fraction to prune (0 when not pruning).
        pattern: N:M pattern or None.
        grid: The quantization grid, or None when not quantizing.
        layer_bits: ``((layer name, bits), ...)``: layers whose grid has other
            bits than ``grid`` (mixed precision); the rest use ``grid``.
        activations: Give quantized models int8 input/output ranges.
        damping: Relative Hessian dampening.
        block_size: Lazy-update block of the column sweep.
        batch_size: Calibration examples per forward pass.
        max_samples: Calibration examples to read at most.
        verbose: 1 for a progress bar over layers.
    """

    operation: str
    method: str
    sparsity: float = 0.0
    pattern: NMPattern | None = None
    grid: GridSpec | None = None
    layer_bits: tuple[tuple[str, int], ...] = ()
    activations: bool = True
    damping: float = 0.01
    block_size: int = 128
    batch_size: int = 32
    max_samples: int | None = None
    verbose: int = 1

    @property
    def prunes(self) -> bool:
        return self.operation in ("prune", "compress")

    @property
    def needs_hessian_factor(self) -> bool:
        return self.method not in ("magnitude", "rtn")

    def bits_for(self, name: str) -> int | None:
        """The weight bits of layer ``name`` (None when not quantizing)."""
        if self.grid is None:
            return None
        return dict(self.layer_bits).get(name, self.grid.bits)

    def for_layer(self, name: str) -> Settings:
        """These settings with layer ``name``'s own grid (mixed precision)."""
        bits = self.bits_for(name)
        if self.grid is None or bits == self.grid.bits:
            return self
        return dataclasses.replace(self, grid=dataclasses.replace(self.grid, bits=bits))


@dataclasses.dataclass
class Solution:
    """One layer's result: new weights, keep-mask, grid steps, errors."""

    weights: np.ndarray
    keep: np.ndarray | None
    steps: np.ndarray | None
    baseline_error: float
    error: float
    damping: float


def solve_layer(
    weights: np.ndarray,
    hessian: np.ndarray,
    settings: Settings,
    name: str = "layer",
    *,
    overwrite_hessian: bool = False,
) -> Solution:
    """Compresses one ``(G, R, C)`` weight stack given its Hessian (the numerical core).

    Args:
        weights: ``(G, R, C)`` float32.
        hessian: ``(G, C, C)`` undamped ``2 X X^T / n``.
        settings: What to do.
        name: Layer name for messages.
        overwrite_hessian: Factor in ``hessian`` itself (a writable float64
            array), which is rebuilt from its lower triangle afterwards: one
            Hessian less memory (see :func:`~tfcompress.oneshot.hessian.inverse_cholesky`).

    Returns:
        A :class:`Solution`.
    """
    with single_threaded_blas():
        return _solve(weights, hessian, settings, name, overwrite_hessian)


def _solve(
    weights: np.ndarray, hessian: np.ndarray, settings: Settings, name: str, overwrite: bool
) -> Solution:
    s = settings
    # Baseline: magnitude and/or round-to-nearest at the same pattern and grid.
    base_keep = magnitude_mask(weights, s.sparsity, s.pattern) if s.prunes else None
    base_steps = None
    if s.grid is not None:
        baseline, base_steps = round_to_nearest(weights, s.grid, base_keep)
    else:
        baseline = np.where(base_keep, weights, np.float32(0))
    baseline_error = relative_error(weights, baseline, hessian)
    if s.method in ("magnitude", "rtn"):
        if not np.all(np.isfinite(baseline)):
            raise ValueError(f"layer {name!r}: the {s.method} solution has NaN/Inf weights")
        result = baseline.astype(np.float32)
        return Solution(result, base_keep, base_steps, baseline_error, baseline_error, float("nan"))
    del baseline, base_keep, base_steps  # not needed while the factor is held
    # Only exact OBS reads the float64 inverse; the sweeps read its float32 factor.
    factor = inverse_cholesky(
        hessian, s.damping, name=name, inverse=s.method == "obs", overwrite=overwrite
    )
    damping = factor.damping
    steps = None
    if s.method == "obs":
        result, keep = obs_prune(weights, factor.inverse, sparsity=s.sparsity, pattern=s.pattern)
    else:  # sparsegpt, gptq, joint
        result, keep, steps = column_sweep(
            weights,
            factor.chol,
            sparsity=s.sparsity if s.prunes else 0.0,
            pattern=s.pattern if s.prunes else None,
            grid=s.grid,
            block_size=s.block_size,
        )
        if not s.prunes:
            keep = None
    del factor
    if not np.all(np.isfinite(result)):
        raise ValueError(f"layer {name!r}: the {s.method} solution has NaN/Inf weights")
    result = result.astype(np.float32, copy=False)
    return Solution(
        result, keep, steps, baseline_error, relative_error(weights, result, hessian), damping
    )


def _peak_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _working_bytes(target: Target, weights: np.ndarray, settings: Settings) -> int:
    """The most one layer holds at a time, by phase (the larger of the two).

    Capture: the float64 Hessian sum, the largest input batch and a block of
    ``X^T X`` (``C x ACCUMULATE_COLUMNS`` float32). Solve: the Hessian (also
    the work array of the factorisation: ``overwrite_hessian``), its float32
    inverse factor (half a Hessian; the float64 inverse too for ``"obs"``, with
    its per-row chunk), and about four weight stacks (the copy, the sweep's
    working copy, the result, masks and blocks of the update).
    """
    groups, rows, columns = weights.shape
    hessian = target.hessian.nbytes
    capture = hessian + target.largest_batch_bytes + columns * min(columns, ACCUMULATE_COLUMNS) * 4
    solve = hessian + weights.nbytes * 4
    if settings.needs_hessian_factor:
        solve += hessian // 2
    if settings.method == "obs":  # one inverse Hessian (float64) per row, chunked
        solve += hessian + min(OBS_CHUNK_BYTES, groups * rows * columns * columns * 8)
    return int(max(capture, solve))


def _carrier_name(layer: keras.layers.Layer, settings: Settings, quant: bool) -> str:
    if settings.grid is None:
        return "mask"
    name = type(layer).__name__ if quant else carriers.FLOAT_GRID
    return f"{name} + mask" if settings.prunes else name


def run(
    model: keras.Model, data: Any, settings: Settings, layers: Any
) -> tuple[keras.Model, OneShotReport]:
    """The one-shot run; see the module docstring. Arguments are already checked."""
    start = time.perf_counter()
    calib = calibration_data(data, model, max_samples=settings.max_samples)
    plan = plan_targets(model, layers, settings.operation)
    if settings.layer_bits:
        named = dict(settings.layer_bits)
        unnamed = [name for name in plan.names if name not in named]
        if unnamed:
            raise ValueError(
                f"bits names layers by other names than the model's paths; use {plan.names} "
                f"(no bits given for {unnamed})"
            )
    for name in plan.names:
        rule, _ = rule_for(find_layer(model, name))
        kernel = rule.kernel()
        if not np.all(np.isfinite(kernel)):
            raise ValueError(
                f"layer {name!r} has NaN/Inf weights; one-shot compression needs finite ones"
            )
    report = OneShotReport(
        operation=settings.operation,
        method=settings.method,
        pattern=(str(settings.pattern) if settings.pattern else "unstructured")
        if settings.prunes
        else None,
        target_sparsity=settings.sparsity if settings.prunes else None,
        bits=settings.grid.bits if settings.grid and not settings.layer_bits else None,
        skipped=list(plan.skipped),
        calibration_samples=calib.num_samples,
    )
    quant_names: set[str] = set()
    if settings.grid is not None:
        quant_names = carriers.quant_carrier_names(
            model, plan.names, settings.grid.group_size is not None
        )
        work = carriers.quantized_copy(
            model,
            quant_names,
            {name: settings.bits_for(name) for name in quant_names},
            settings.grid.per_channel,
            settings.activations,
        )
    else:
        work, _ = rewrite_model(model, lambda layer: None)
    targets = [Target(name, rule_for(find_layer(work, name))[0]) for name in plan.names]
    keeps: dict[str, tuple[np.ndarray, tuple[int, ...]]] = {}
    progress = keras.utils.Progbar(
        len(targets),
        verbose=settings.verbose,
        unit_name="layer",
        stateful_metrics=["error", "baseline"],  # the last layer's, not running means
    )
    done = [0]
    solve_seconds = [0.0]

    def solve(group: list[Target]) -> None:
        for target in group:
            began = time.perf_counter()
            rule = target.rule
            weights = rule.matrix()
            hessian = target.hessian.take_hessian()  # scaled in place: no second Hessian
            layer_settings = settings.for_layer(target.name)
            solution = solve_layer(
                weights, hessian, layer_settings, target.name, overwrite_hessian=True
            )
            del hessian
            samples = target.hessian.count
            if samples < rule.columns and settings.needs_hessian_factor:
                warnings.warn(
                    f"layer {target.name!r}: {samples} calibration input vectors for "
                    f"{rule.columns} input columns, so its Hessian is singular; dampening "
                    f"{solution.damping:g} x mean(diag H) was used. Give more calibration data "
                    "for a better solution.",
                    UserWarning,
                    stacklevel=5,
                )
            rule.variable.assign(rule.kernel_from(solution.weights))
            quant = target.name in quant_names
            if quant and solution.steps is not None:
                carriers.set_grid_step(rule.layer, solution.steps)
            if solution.keep is not None:
                # One bit a weight until the end (a float32 mask per layer is the weights again).
                mask = rule.kernel_from(solution.keep.astype(np.float32))
                keeps[target.name] = (np.packbits(mask != 0), mask.shape)
                del mask
            seconds = time.perf_counter() - began
            solve_seconds[0] += seconds
            kernel = rule.kernel()
            report.layers.append(
                LayerReport(
                    name=target.name,
                    kind=type(rule.layer).__name__,
                    method=settings.method,
                    rows=rule.rows,
                    columns=rule.columns,
                    problems=rule.groups,
                    samples=samples,
                    sparsity=float(np.mean(kernel == 0)),
                    bits=settings.bits_for(target.name),
                    baseline_error=solution.baseline_error,
                    error=solution.error,
                    damping=solution.damping,
                    seconds=seconds,
                    working_bytes=_working_bytes(target, weights, settings),
                    carrier=_carrier_name(rule.layer, settings, quant),
                )
            )
            done[0] += 1
            progress.update(
                done[0], [("error", solution.error), ("baseline", solution.baseline_error)]
            )
            del weights, solution, kernel

    # Quantizing: capture float activations (the Quant layers' ranges are not set yet, and
    # kernels not yet reached must stay float). Pruning runs the model as it computes.
    bypass = bypass_quantizers(work) if settings.grid is not None else contextlib.nullcontext()
    with bypass:
        sequential = run_sequential(work, targets, calib, solve, batch_size=settings.batch_size)
    report.passes = sequential.passes
    report.cached_activation_bytes = sequential.cached_bytes
    for index in sequential.never_called:
        target = targets[index]
        report.skipped.append(
            (target.name, type(target.layer).__name__, "not called on the calibration data")
        )
        warnings.warn(
            f"layer {target.name!r} was not called when the model ran on the calibration data; "
            "it was left as it was",
            UserWarning,
            stacklevel=3,
        )
    for target in targets:
        if target.name in keeps:
            bits, shape = keeps.pop(target.name)
            keep = np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape)
            carriers.apply_mask(work, target.layer, target.rule.variable, keep)
    if settings.grid is not None:
        carriers.calibrate_ranges(work, calib, settings.batch_size)
        _grid_notes(report, settings, quant_names)
    report.peak_layer_bytes = max((r.working_bytes for r in report.layers), default=0)
    report.seconds = time.perf_counter() - start
    report.capture_seconds = max(report.seconds - solve_seconds[0], 0.0)
    report.peak_rss_bytes = _peak_rss()
    return work, report


def _grid_notes(report: OneShotReport, settings: Settings, quant_names: set[str]) -> None:
    floats = [r.name for r in report.layers if r.name not in quant_names]
    if floats:
        why = (
            "group_size gives per-group steps, which no Quant layer or TFLite int8 tensor holds"
            if settings.grid.group_size is not None
            else "tfcompress has no Quant layer for their type"
        )
        bits = sorted({settings.bits_for(name) for name in floats})
        report.notes.append(
            f"{len(floats)} layer(s) keep float kernels whose values are on the "
            f"{'/'.join(map(str, bits))}-bit grid ({why}): exact in Keras and .keras, stored as float "
            f"(or re-quantized) in TFLite: {', '.join(floats)}"
        )
    dense = [
        r.name
        for r in report.layers
        if r.name in quant_names and r.kind == "QuantDense" and settings.grid.per_channel
    ]
    if dense:
        report.notes.append(
            "per-channel grids on Dense layers are exact in Keras and .keras, but the TFLite "
            "converter accepts only per-tensor ranges on FULLY_CONNECTED weights: quantize with "
            f"per_channel=False for an int8 TFLite file ({', '.join(dense)})"
        )
