"""Layer-wise reconstruction in NumPy: SparseGPT, GPTQ and their joint form; the baselines.

Every solver works on a stack of weight matrices ``W`` of shape ``(G, R, C)``:
``G`` independent problems (1 for Dense, the channels of a depthwise kernel),
``R`` rows (output units), ``C`` columns (the inputs the rows share, one
Hessian per problem). The layer's output error on the calibration inputs
``X`` (columns of ``C`` features) is ``||W X - W' X||^2 = n/2 tr(dW H dW^T)``
with ``H = 2 X X^T / n``; the solvers minimise it column by column.

**The column sweep** (OBS applied to one column at a time, in a fixed order:
Frantar & Alistarh 2022/2023, Frantar et al. 2023). With ``U`` the upper
Cholesky factor of ``H^-1`` (``H^-1 = U^T U``), column ``j`` is compressed
(zeroed where the mask prunes, rounded to the grid where it quantizes) and its
error ``e = (w_j - q_j) / U_jj`` is pushed onto the columns not yet visited:
``W[:, j:] -= e U[j, j:]``. Row ``j`` of ``U`` is exactly the OBS update of
the remaining columns once columns ``< j`` are fixed, so each step is the
optimal correction for that column. Updates are applied lazily: inside a
block of ``B`` columns immediately, to the columns after the block once per
block (one matrix product), which is what makes it fast.

**SparseGPT's mask** is chosen per block, from the weights as they are when
the block starts (earlier corrections included): the ``p`` fraction of the
block with the lowest OBS saliency ``w^2 / U_jj^2`` is pruned, across all
rows of the block, so rows may differ in sparsity. **N:M** picks, at the start
of every group of ``M`` columns, the ``M - N`` lowest-saliency weights of each
row; blocks are cut at multiples of ``M`` so groups never straddle blocks.
**GPTQ** rounds every column to the grid; with ``group_size`` the step of a
group is taken from the group's columns when the sweep reaches them.

References:
    Frantar & Alistarh, "Optimal Brain Compression: A Framework for Accurate
    Post-Training Quantization and Pruning", NeurIPS 2022.
    Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately
    Pruned in One-Shot", ICML 2023.
    Frantar, Ashkboos, Hoefler & Alistarh, "GPTQ: Accurate Post-Training
    Quantization for Generative Pre-trained Transformers", ICLR 2023.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfcompress.oneshot.grid import GridSpec, grid_steps, quantize_columns

__all__ = [
    "NMPattern",
    "column_sweep",
    "magnitude_mask",
    "relative_error",
    "round_to_nearest",
]


@dataclasses.dataclass(frozen=True)
class NMPattern:
    """Keep ``n`` weights in every group of ``m`` consecutive columns of a row."""

    n: int
    m: int

    @property
    def sparsity(self) -> float:
        """``1 - n / m``."""
        return 1.0 - self.n / self.m

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"


#: Bytes of float64 weight rows (``rows x C``) per product when measuring errors.
_ERROR_CHUNK_BYTES = 8 * 2**20


def relative_error(original: np.ndarray, compressed: np.ndarray, hessian: np.ndarray) -> float:
    """``||W X - W' X||^2 / ||W X||^2`` from the (undamped) Hessian ``H = 2 X X^T / n``.

    Args:
        original: ``(G, R, C)`` weights ``W``.
        compressed: ``(G, R, C)`` weights ``W'``.
        hessian: ``(G, C, C)``.

    Returns:
        The relative output error (0 when ``W X`` is 0 and nothing changed).

    Summed over blocks of rows, so its float64 temporaries stay a few MiB instead of
    several weight stacks (``tr(dW H dW^T)`` splits over rows).
    """
    groups, rows, columns = np.shape(original)
    step = max(1, _ERROR_CHUNK_BYTES // (8 * max(columns, 1)))
    num = den = 0.0
    for group in range(groups):
        h = np.asarray(hessian[group], np.float64)
        for start in range(0, rows, step):
            w = np.asarray(original[group, start : start + step], np.float64)
            delta = w - np.asarray(compressed[group, start : start + step], np.float64)
            num += float(np.sum((delta @ h) * delta))
            den += float(np.sum((w @ h) * w))
    if den <= 0.0:
        return 0.0 if num <= 0.0 else float("inf")
    return max(num, 0.0) / den


def _pruned_count(total: int, sparsity: float) -> int:
    return round(sparsity * total)


def magnitude_mask(
    weights: np.ndarray, sparsity: float = 0.0, pattern: NMPattern | None = None
) -> np.ndarray:
    """The one-shot magnitude baseline: keep-mask of the largest ``|w|`` of a layer.

    Unstructured: the ``round(sparsity * size)`` smallest weights of the whole
    stack are pruned (stable order: ties go to the lower index). N:M: the
    ``m - n`` smallest of every group of ``m`` columns of each row (a last,
    shorter group keeps ``n`` and prunes the rest).

    Args:
        weights: ``(G, R, C)``.
        sparsity: Fraction to prune (unstructured).
        pattern: An :class:`NMPattern`, or None for unstructured.

    Returns:
        Boolean keep-mask shaped like ``weights``.
    """
    magnitude = np.abs(np.asarray(weights, np.float64))
    if pattern is not None:
        return _nm_keep(magnitude, pattern)
    keep = np.ones(magnitude.size, bool)
    count = _pruned_count(magnitude.size, sparsity)
    if count:
        keep[np.argsort(magnitude.ravel(), kind="stable")[:count]] = False
    return keep.reshape(magnitude.shape)


def _nm_keep(scores: np.ndarray, pattern: NMPattern) -> np.ndarray:
    """Keep the ``n`` highest scores in every group of ``m`` along the last axis."""
    columns = scores.shape[-1]
    keep = np.ones(scores.shape, bool)
    for start in range(0, columns, pattern.m):
        group = scores[..., start : start + pattern.m]
        drop = group.shape[-1] - pattern.n
        if drop > 0:
            lowest = np.argsort(group, axis=-1, kind="stable")[..., :drop]
            np.put_along_axis(keep[..., start : start + pattern.m], lowest, False, axis=-1)
    return keep


def round_to_nearest(weights: np.ndarray, spec: GridSpec, keep: np.ndarray | None = None):
    """The round-to-nearest baseline: every weight rounded to its grid, no correction.

    Args:
        weights: ``(G, R, C)``.
        spec: The grid (steps from ``max|w|`` of each row, tensor or group).
        keep: Optional keep-mask; pruned weights become 0 before rounding.

    Returns:
        ``(quantized weights, steps)``; steps ``(G, R, n_groups)`` with groups,
        else ``(G, R)`` or ``(G, 1)``.
    """
    w = np.asarray(weights, np.float32)
    if keep is not None:
        w = np.where(keep, w, np.float32(0))
    if spec.group_size is None:
        steps = grid_steps(w, spec)
        return quantize_columns(w, steps[..., None], spec.qmax), steps
    parts, all_steps = [], []
    for start in range(0, w.shape[-1], spec.group_size):
        part = w[..., start : start + spec.group_size]
        steps = grid_steps(part, spec)
        parts.append(quantize_columns(part, steps[..., None], spec.qmax))
        all_steps.append(steps)
    return np.concatenate(parts, axis=-1), np.stack(all_steps, axis=-1)


def _block_size(block_size: int, pattern: NMPattern | None, spec: GridSpec | None) -> int:
    """A block size that N:M groups and quantization groups never straddle."""
    unit = 1
    if pattern is not None:
        unit = pattern.m
    if spec is not None and spec.group_size is not None:
        unit = int(np.lcm(unit, spec.group_size))
    return max(unit, (block_size // unit) * unit)


def column_sweep(
    weights: np.ndarray,
    hinv_chol: np.ndarray,
    *,
    sparsity: float = 0.0,
    pattern: NMPattern | None = None,
    grid: GridSpec | None = None,
    block_size: int = 128,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """SparseGPT / GPTQ / joint: prune and/or quantize ``W`` with OBS corrections.

    Args:
        weights: ``(G, R, C)`` weights (not modified).
        hinv_chol: ``(G, C, C)`` upper Cholesky factor ``U`` of the damped
            inverse Hessian (``H^-1 = U^T U``), from
            :func:`tfcompress.oneshot.hessian.inverse_cholesky`.
        sparsity: Unstructured fraction to prune, chosen adaptively per block
            (ignored when ``pattern`` is given).
        pattern: N:M pattern (keep ``n`` of every ``m`` columns of a row).
        grid: Quantize the kept weights to this grid (GPTQ); None: no quantization.
        block_size: Columns per lazy-update block (rounded down to a multiple
            of ``m`` and of ``grid.group_size``).

    Returns:
        ``(new weights float32, keep-mask bool, grid steps or None)``; steps as
        :func:`round_to_nearest` returns them.

    Example:
        >>> q, keep, _ = column_sweep(w, inverse_cholesky(h)[0], sparsity=0.5)
    """
    w = np.array(weights, np.float32, copy=True)
    u = np.asarray(hinv_chol, np.float32)
    groups, rows, columns = w.shape
    keep = np.ones(w.shape, bool)
    prune = pattern is not None or sparsity > 0.0
    steps = None
    if grid is not None and grid.group_size is None:
        steps = grid_steps(w, grid)  # from the weights before any correction
    group_steps = []
    block = _block_size(block_size, pattern, grid)
    pruned_so_far = 0
    for start in range(0, columns, block):
        stop = min(start + block, columns)
        count = stop - start
        w1 = w[..., start:stop].copy()
        q1 = np.zeros_like(w1)
        err1 = np.zeros_like(w1)
        u1 = u[:, start:stop, start:stop]
        diag = np.diagonal(u1, axis1=1, axis2=2)[:, None, :]  # (G, 1, count)
        keep1 = np.ones(w1.shape, bool)
        if prune and pattern is None:
            # Cumulative rounding: exactly round(sparsity * size) pruned in the layer.
            target = _pruned_count(groups * rows * stop, sparsity)
            drop = target - pruned_so_far
            if drop > 0:
                saliency = (w1**2 / diag**2).ravel()
                lowest = np.argpartition(saliency, drop - 1)[:drop]
                flat = keep1.reshape(-1)
                flat[lowest] = False
                pruned_so_far += drop
        block_steps = steps
        for j in range(count):
            if pattern is not None and j % pattern.m == 0:
                span = slice(j, min(j + pattern.m, count))
                saliency = w1[..., span] ** 2 / diag[..., span] ** 2
                keep1[..., span] = _nm_keep(saliency, pattern)
            if grid is not None and grid.group_size is not None and j % grid.group_size == 0:
                span = slice(j, min(j + grid.group_size, count))
                block_steps = grid_steps(np.where(keep1[..., span], w1[..., span], 0), grid)
                group_steps.append(block_steps)
            column = w1[..., j]
            q = np.where(keep1[..., j], column, np.float32(0))
            if grid is not None:
                q = quantize_columns(q, block_steps, grid.qmax)
            q1[..., j] = q
            err = (column - q) / diag[..., j]
            w1[..., j:] -= err[..., None] * u1[:, None, j, j:]
            err1[..., j] = err
        w[..., start:stop] = q1
        keep[..., start:stop] = keep1
        if stop < columns:
            w[..., stop:] -= np.matmul(err1, u[:, start:stop, stop:])
    if group_steps:
        steps = np.stack(group_steps, axis=-1)
    return w, keep, steps
