"""Exact Optimal Brain Surgeon pruning, row by row (OBC), for small layers.

Each row ``w`` of a weight matrix has the same quadratic loss
``dL = 1/2 dw^T H dw``. OBS removes one weight at a time: the weight ``q``
with the least loss increase ``w_q^2 / [H^-1]_qq`` is zeroed, the others are
corrected by the closed form ``w <- w - w_q / [H^-1]_qq * H^-1[:, q]``, and
``H^-1`` is *downdated* to the inverse Hessian of the remaining weights,
``H^-1 <- H^-1 - H^-1[:, q] H^-1[q, :] / [H^-1]_qq`` (Gaussian elimination of
row and column ``q``). Unlike the column sweep of SparseGPT, every step
re-chooses the best weight with an exact, current inverse, so the result is
the greedy OBS optimum.

Rows are independent and processed together (vectorised over rows, each
with its own copy of ``H^-1``: ``R C^2`` numbers, chunked to bound memory).
Unstructured sparsity is allocated across rows as in OBC: every row is pruned
greedily up to ``2 p C`` weights (``p`` the sparsity) while its loss after each
step and its weights at each step are recorded; the ``round(p R C)`` cheapest
steps over all rows (each row's losses made non-decreasing first) decide how
many weights each row loses. N:M prunes exactly ``m - n`` weights in every
group of ``m`` columns of each row, greedily.

Cost grows as ``R C^3``: meant for layers of a few hundred columns; use
SparseGPT for wide ones.

References:
    Hassibi & Stork, "Second order derivatives for network pruning: Optimal
    Brain Surgeon", NeurIPS 1992.
    Frantar & Alistarh, "Optimal Brain Compression", NeurIPS 2022.
"""

from __future__ import annotations

import math

import numpy as np

from tfcompress.oneshot.solvers import NMPattern

__all__ = ["OBS_CHUNK_BYTES", "obs_prune", "obs_step"]

#: Bytes of per-row inverse Hessians and traces processed at a time.
OBS_CHUNK_BYTES = 192 * 2**20


def obs_step(w: np.ndarray, hinv: np.ndarray, q: int) -> tuple[np.ndarray, np.ndarray]:
    """One exact OBS step on one row: prune weight ``q``.

    Args:
        w: ``(C,)`` weights of the row.
        hinv: ``(C, C)`` inverse Hessian of the weights still free.
        q: Index of the weight to prune.

    Returns:
        ``(w - w_q / [H^-1]_qq * H^-1[:, q]`` with ``w_q`` set exactly to 0,
        the downdated inverse)``.

    Example:
        >>> w2, hinv2 = obs_step(w, np.linalg.inv(h), 3)
        >>> w2[3]
        0.0
    """
    w = np.asarray(w, np.float64)
    hinv = np.asarray(hinv, np.float64)
    column = hinv[:, q]
    new_w = w - (w[q] / hinv[q, q]) * column
    new_w[q] = 0.0
    new_hinv = hinv - np.outer(column, column) / hinv[q, q]
    return new_w, new_hinv


def _greedy(
    w: np.ndarray,
    hinv: np.ndarray,
    steps: int,
    pattern: NMPattern | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy OBS for ``n`` rows at once: weights after each step and each step's loss.

    Args:
        w: ``(n, C)`` float64 rows (modified).
        hinv: ``(n, C, C)`` float64 inverse Hessians (modified).
        steps: Weights to prune per row.
        pattern: N:M limits (at most ``m - n`` pruned per group), or None.

    Returns:
        ``(trace (n, steps + 1, C) float32, losses (n, steps) float64, pruned
        index of each step (n, steps))``.
    """
    n, columns = w.shape
    rows = np.arange(n)
    pruned = np.zeros((n, columns), bool)
    trace = np.empty((n, steps + 1, columns), np.float32)
    trace[:, 0] = w
    losses = np.empty((n, steps), np.float64)
    picked = np.empty((n, steps), np.int64)
    group_of = np.arange(columns) // pattern.m if pattern is not None else None
    for t in range(steps):
        diag = np.diagonal(hinv, axis1=1, axis2=2)
        blocked = pruned.copy()
        if pattern is not None:
            groups = math.ceil(columns / pattern.m)
            counts = np.zeros((n, groups), np.int64)
            np.add.at(counts, (np.repeat(rows, columns), np.tile(group_of, n)), pruned.ravel())
            sizes = np.bincount(group_of, minlength=groups)
            full = counts >= np.maximum(sizes - pattern.n, 0)[None, :]
            blocked |= full[:, group_of]
        safe = np.where(blocked, 1.0, diag)
        score = np.where(blocked, np.inf, w**2 / safe)
        q = np.argmin(score, axis=1)
        hqq = diag[rows, q]
        wq = w[rows, q]
        losses[:, t] = wq**2 / hqq / 2.0
        column = hinv[rows, :, q]  # (n, C)
        w -= (wq / hqq)[:, None] * column
        w[rows, q] = 0.0
        hinv -= column[:, :, None] * column[:, None, :] / hqq[:, None, None]
        pruned[rows, q] = True
        w[pruned] = 0.0  # the downdated inverse leaves rounding residue on pruned weights
        picked[:, t] = q
        trace[:, t + 1] = w
    return trace, losses, picked


def obs_prune(
    weights: np.ndarray,
    hinv: np.ndarray,
    *,
    sparsity: float = 0.0,
    pattern: NMPattern | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact greedy OBS pruning of every row (OBC), unstructured or N:M.

    Args:
        weights: ``(G, R, C)`` weights.
        hinv: ``(G, C, C)`` damped inverse Hessian (float64).
        sparsity: Fraction of the layer to prune (unstructured); ignored with ``pattern``.
        pattern: N:M pattern.

    Returns:
        ``(new weights float32, keep-mask bool)``.

    Example:
        >>> w2, keep = obs_prune(w, inverse_cholesky(h).inverse, sparsity=0.5)
    """
    w = np.asarray(weights, np.float64)
    groups, rows, columns = w.shape
    flat_w = w.reshape(groups * rows, columns)
    owner = np.repeat(np.arange(groups), rows)
    if pattern is not None:
        full, rest = divmod(columns, pattern.m)
        steps = full * (pattern.m - pattern.n) + max(rest - pattern.n, 0)
    else:
        total = round(sparsity * w.size)
        steps = min(columns, math.ceil(2 * sparsity * columns)) if total else 0
    result = flat_w.astype(np.float32)
    keep = np.ones(flat_w.shape, bool)
    if steps == 0:
        return result.reshape(w.shape), keep.reshape(w.shape)
    chunk = max(1, OBS_CHUNK_BYTES // (columns * columns * 8 + (steps + 1) * columns * 4))
    traces, all_losses, all_picked = [], [], []
    for start in range(0, flat_w.shape[0], chunk):
        stop = min(start + chunk, flat_w.shape[0])
        h = np.array(hinv[owner[start:stop]], np.float64, copy=True)
        trace, losses, picked = _greedy(flat_w[start:stop].copy(), h, steps, pattern)
        if pattern is not None:
            result[start:stop] = trace[:, -1]
            np.put_along_axis(keep[start:stop], picked, False, axis=1)
        else:
            traces.append(trace)
            all_losses.append(losses)
            all_picked.append(picked)
    if pattern is None:
        losses = np.maximum.accumulate(np.concatenate(all_losses), axis=1)
        order = np.lexsort((np.tile(np.arange(steps), losses.shape[0]), losses.ravel()))
        chosen = order[:total] // steps
        counts = np.bincount(chosen, minlength=losses.shape[0])
        trace = np.concatenate(traces)
        result = trace[np.arange(trace.shape[0]), counts]
        picked = np.concatenate(all_picked)
        keep = np.arange(steps)[None, :] >= counts[:, None]  # which steps were not taken
        full = np.ones(flat_w.shape, bool)
        np.put_along_axis(full, picked, keep, axis=1)
        keep = full
    return result.reshape(w.shape), keep.reshape(w.shape)
