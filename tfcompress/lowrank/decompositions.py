"""Truncated SVD, rank selection and global rank allocation (NumPy, offline).

The Eckart-Young theorem says the best rank-``r`` approximation of a matrix
``W`` in the Frobenius norm is its truncated SVD, and its squared error is the
sum of the discarded squared singular values (the "SVD tail")::

    min_{rank(A) <= r} ||W - A||_F^2 = sum_{k >= r} s_k^2

Everything here builds on that: factors for a rank, the rank that keeps a
fraction of the energy ``sum s_k^2``, and the allocation of one parameter
budget across layers that minimises the total squared error.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tfcompress.core.budget import DEFAULT_MAX_WORK, solve_budget

__all__ = [
    "allocate_ranks",
    "check_rank",
    "check_rank_arg",
    "energy_rank",
    "factor_params",
    "max_useful_rank",
    "svd_tail_error",
    "total_tail_error",
    "truncated_svd",
    "tucker2",
    "uniform_ranks",
]

# Above this many DP cell updates the exact allocation is skipped for the greedy.
_DP_MAX_WORK = DEFAULT_MAX_WORK


def _check_matrix(matrix: np.ndarray, argument: str = "matrix") -> np.ndarray:
    array = np.asarray(matrix, dtype=np.float64)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"{argument} must be a non-empty 2-D array, got shape {array.shape}")
    return array


def check_rank_arg(rank: Any, argument: str = "rank") -> int:
    """Checks that a rank argument is an int >= 1 (its upper limit depends on the layer)."""
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
        raise TypeError(f"{argument} must be an int >= 1, got {rank!r}")
    if rank < 1:
        raise ValueError(f"{argument} must be >= 1, got {rank}")
    return int(rank)


def check_rank(rank: int, rows: int, cols: int, argument: str = "rank") -> int:
    """Checks ``1 <= rank < min(rows, cols)`` for a ``rows x cols`` matrix; returns the int."""
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
        raise TypeError(f"{argument} must be an int, got {rank!r}")
    limit = min(rows, cols)
    if rank < 1:
        raise ValueError(f"{argument} must be >= 1, got {rank}")
    if rank >= limit:
        raise ValueError(
            f"{argument}={rank} must be < min(in, out) = min({rows}, {cols}) = {limit}: "
            "a factorization at full rank stores more parameters than the matrix itself"
        )
    return int(rank)


def truncated_svd(matrix: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Best rank-``rank`` factors ``(A, B)`` of ``matrix`` with ``A @ B`` ~ ``matrix``.

    The singular values are split evenly (``A = U_r sqrt(S_r)``,
    ``B = sqrt(S_r) V_r^T``) so that both factors have the same scale, which
    keeps fine-tuning of the factors well conditioned.

    Args:
        matrix: A 2-D array of shape ``(m, n)``.
        rank: The rank, ``1 <= rank < min(m, n)``.

    Returns:
        ``A`` of shape ``(m, rank)`` and ``B`` of shape ``(rank, n)`` (float32).

    Raises:
        ValueError: If ``matrix`` is not 2-D or ``rank`` is out of range.

    Example:
        >>> a, b = truncated_svd(np.outer([1.0, 2.0, 3.0], [1.0, 0.0, 1.0]), 1)
        >>> np.allclose(a @ b, np.outer([1.0, 2.0, 3.0], [1.0, 0.0, 1.0]))
        True
    """
    array = _check_matrix(matrix)
    rank = check_rank(rank, *array.shape)
    u, s, vt = np.linalg.svd(array, full_matrices=False)
    root = np.sqrt(s[:rank])
    return (u[:, :rank] * root).astype(np.float32), (root[:, None] * vt[:rank]).astype(np.float32)


def svd_tail_error(singular_values: np.ndarray, rank: int) -> float:
    """Squared Frobenius error of the best rank-``rank`` approximation: ``sum_{k>=rank} s_k^2``."""
    s = np.asarray(singular_values, dtype=np.float64)
    return float(np.sum(s[rank:] ** 2))


def energy_rank(singular_values: np.ndarray, energy: float) -> int:
    """The smallest rank keeping at least ``energy`` of ``sum s_k^2``.

    Args:
        singular_values: The singular values (any order; they are sorted).
        energy: Fraction of the energy to keep, in ``(0, 1]``.

    Returns:
        A rank between 1 and ``len(singular_values)``.

    Raises:
        ValueError: If ``energy`` is outside ``(0, 1]``.
    """
    check_energy(energy)
    s2 = np.sort(np.asarray(singular_values, dtype=np.float64) ** 2)[::-1]
    total = s2.sum()
    if total == 0:
        return 1
    kept = np.cumsum(s2) / total
    # A small slack so that energy=1.0 is reached despite rounding in cumsum.
    return int(min(len(s2), np.searchsorted(kept, energy - 1e-12) + 1))


def check_energy(energy: float) -> float:
    if isinstance(energy, bool) or not isinstance(energy, (int, float, np.floating)):
        raise TypeError(f"energy must be a float in (0, 1], got {energy!r}")
    if not 0.0 < float(energy) <= 1.0:
        raise ValueError(f"energy must be in (0, 1] (fraction of sum s_k^2 kept), got {energy}")
    return float(energy)


def factor_params(rows: int, cols: int, rank: int) -> int:
    """Parameters of a rank-``rank`` factorization of a ``rows x cols`` matrix."""
    return rank * (rows + cols)


def max_useful_rank(rows: int, cols: int) -> int:
    """The largest rank whose factors have fewer parameters than the matrix (0 if none)."""
    return max(0, math.ceil(rows * cols / (rows + cols)) - 1)


def uniform_ranks(max_ranks: Sequence[int], rank: int) -> list[int]:
    """The same ``rank`` for every layer, clipped to each layer's ``max_ranks``."""
    return [max(1, min(rank, m)) for m in max_ranks]


def total_tail_error(spectra: Sequence[np.ndarray], ranks: Sequence[int]) -> float:
    """Sum over layers of :func:`svd_tail_error`."""
    return float(sum(svd_tail_error(s, r) for s, r in zip(spectra, ranks)))


def allocate_ranks(
    spectra: Sequence[np.ndarray],
    costs: Sequence[int],
    budget: int,
    max_ranks: Sequence[int] | None = None,
    method: str = "auto",
) -> list[int]:
    """Per-layer ranks under one parameter budget that minimise the total squared error.

    Minimises ``sum_l sum_{k >= r_l} s_{l,k}^2`` (the Eckart-Young error of
    every layer) subject to ``sum_l r_l * costs[l] <= budget`` and
    ``1 <= r_l <= max_ranks[l]``.

    Each layer's options are ranks ``1..max_ranks[l]``, solved by the shared
    budget solver (:func:`tfcompress.core.budget.solve_budget`): ``"dp"``
    solves this exactly (a multiple-choice knapsack over the budget in units
    of the costs' greatest common divisor). ``"greedy"`` adds one rank
    at a time to the layer with the largest error reduction per parameter,
    twice: from rank 1 everywhere, and from the best uniform rank that fits;
    it returns the better, so it is never worse than a uniform rank at the
    same budget. ``"auto"`` uses the DP when its table is small, else greedy.

    Args:
        spectra: Singular values of each layer, in descending order.
        costs: Parameters one unit of rank costs in each layer (``m + n``).
        budget: Total parameters the factors may use.
        max_ranks: Largest rank allowed per layer (default: all singular values).
        method: ``"auto"``, ``"dp"`` or ``"greedy"``.

    Returns:
        One rank per layer.

    Raises:
        ValueError: If even rank 1 everywhere exceeds the budget, or for an
            unknown ``method`` or mismatched lengths.

    Example:
        >>> allocate_ranks([np.array([3.0, 2.0, 1.0]), np.array([5.0, 0.1])], [4, 4], 12)
        [2, 1]
    """
    if method not in ("auto", "dp", "greedy"):
        raise ValueError(f"method must be 'auto', 'dp' or 'greedy', got {method!r}")
    gains = [np.sort(np.asarray(s, dtype=np.float64))[::-1] ** 2 for s in spectra]
    costs = [int(c) for c in costs]
    tops = [len(g) for g in gains] if max_ranks is None else [int(m) for m in max_ranks]
    if not (len(gains) == len(costs) == len(tops)) or not gains:
        raise ValueError(
            f"spectra, costs and max_ranks must be non-empty and of equal length, got "
            f"{len(gains)}, {len(costs)} and {len(tops)}"
        )
    if any(c < 1 for c in costs) or any(t < 1 for t in tops):
        raise ValueError(f"costs and max_ranks must be >= 1, got {costs} and {tops}")
    tops = [min(t, len(g)) for t, g in zip(tops, gains)]
    minimum = sum(costs)
    if budget < minimum:
        raise ValueError(
            f"budget={budget} parameters is below the {minimum} that rank 1 in every layer needs"
        )
    # Option k of layer l is rank k + 1: it costs (k + 1) * costs[l] and leaves the SVD tail.
    option_costs = [[r * c for r in range(1, top + 1)] for c, top in zip(costs, tops)]
    option_errors = [
        [float(np.sum(g[r:])) for r in range(1, top + 1)] for g, top in zip(gains, tops)
    ]
    solve = functools.partial(solve_budget, option_costs, option_errors, int(budget))
    if method in ("auto", "dp"):
        allocation = solve(method=method, max_work=_DP_MAX_WORK)
        if allocation.exact:
            return [k + 1 for k in allocation.choices]
    # Greedy twice, from rank 1 everywhere and from the best uniform rank that fits: a ratio
    # order that spends the budget on cheap small steps cannot then lose to the uniform rank.
    best_uniform = [1] * len(gains)
    for rank in range(1, max(tops) + 1):
        candidate = uniform_ranks(tops, rank)
        if sum(r * c for r, c in zip(candidate, costs)) <= budget:
            best_uniform = candidate
    runs = [
        solve(method="greedy", start=[r - 1 for r in first])
        for first in ([1] * len(gains), best_uniform)
    ]
    return [k + 1 for k in min(runs, key=lambda run: run.error).choices]


# --- conv kernels (the decomposition objects are in lowrank/conv_decompositions.py) ---
def tucker2(
    kernel: np.ndarray, rank_in: int, rank_out: int, sweeps: int = 5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tucker-2 of a conv kernel over its channel modes: HOSVD then HOOI sweeps.

    Returns ``(U_in (cin, rank_in), core (kh, kw, rank_in, rank_out),
    U_out (filters, rank_out))`` with ``W ~ core x_3 U_in x_4 U_out``.
    """
    w = np.asarray(kernel, dtype=np.float64)

    def leading(matrix: np.ndarray, r: int) -> np.ndarray:
        return np.linalg.svd(matrix, full_matrices=False)[0][:, :r]

    u_in = leading(np.moveaxis(w, 2, 0).reshape(w.shape[2], -1), rank_in)
    u_out = leading(np.moveaxis(w, 3, 0).reshape(w.shape[3], -1), rank_out)
    for _ in range(sweeps):
        projected = np.einsum("hwcf,fs->hwcs", w, u_out)
        u_in = leading(np.moveaxis(projected, 2, 0).reshape(w.shape[2], -1), rank_in)
        projected = np.einsum("hwcf,cr->hwrf", w, u_in)
        u_out = leading(np.moveaxis(projected, 3, 0).reshape(w.shape[3], -1), rank_out)
    core = np.einsum("hwcf,cr,fs->hwrs", w, u_in, u_out)
    return u_in, core, u_out
