"""CP (CANDECOMP/PARAFAC) decomposition by alternating least squares (NumPy, offline).

A rank-``R`` CP decomposition writes an ``N``-way tensor as a sum of ``R``
outer products of vectors, one per mode::

    X[i_1, ..., i_N] ~= sum_r lambda_r A_1[i_1, r] A_2[i_2, r] ... A_N[i_N, r]

with unit-norm columns ``A_n[:, r]`` and weights ``lambda_r >= 0``. Unlike the
SVD of a matrix, the best rank-``R`` CP approximation has no closed form (it
need not even exist); :func:`cp_als` finds a good one by alternating least
squares (Carroll & Chang 1970, Harshman 1970; Kolda & Bader, "Tensor
Decompositions and Applications", SIAM Review 2009, section 3.4): fixing every
factor but ``A_n``, the best ``A_n`` solves a linear least-squares problem::

    A_n = X_(n) (A_N ⊙ ... ⊙ A_{n+1} ⊙ A_{n-1} ⊙ ... ⊙ A_1) V^+,
    V   = *_{m != n} A_m^T A_m          (* the Hadamard product)

where ``X_(n)`` is the mode-``n`` unfolding and ``⊙`` the Khatri-Rao product;
the product ``X_(n) (⊙ ...)`` (the MTTKRP) is computed by contracting one mode
at a time, never forming the Khatri-Rao matrix. Every sweep updates each mode
once and cannot increase the error.

:class:`~tfcompress.lowrank.conv_decompositions.CP` applies this to the 4-way
``(kh, kw, cin, filters)`` Conv2D kernel (Lebedev et al., ICLR 2015).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["CPResult", "cp_als", "cp_compose", "cp_max_useful_rank", "cp_rank_bound"]


@dataclasses.dataclass(frozen=True)
class CPResult:
    """A CP decomposition: ``X ~= sum_r weights[r] * outer(factors[0][:, r], factors[1][:, r], ...)``.

    Attributes:
        weights: ``(R,)`` non-negative weights ``lambda_r``, in descending order.
        factors: One ``(I_n, R)`` factor per mode, unit-norm columns.
        relative_error: ``||X - X_R||_F / ||X||_F`` (0 for a zero tensor).
        iterations: ALS sweeps run.
    """

    weights: np.ndarray
    factors: tuple[np.ndarray, ...]
    relative_error: float
    iterations: int

    @property
    def fit(self) -> float:
        """Fraction of ``||X||_F^2`` explained: ``1 - relative_error**2`` (the CP "energy")."""
        return 1.0 - self.relative_error**2


def cp_rank_bound(shape: Sequence[int]) -> int:
    """The largest CP rank a tensor of ``shape`` can have: ``prod(shape) / max(shape)``.

    Every tensor is the sum of its ``prod_{m != n} I_m`` mode-``n`` fibres, each
    a rank-1 term, so its rank is at most the smallest such product; a larger
    rank only adds redundant components.
    """
    return math.prod(shape) // max(shape)


def cp_max_useful_rank(shape: Sequence[int]) -> int:
    """The largest ``R`` whose factors, ``R * sum(shape)`` weights, are fewer than the tensor's."""
    return max(0, math.ceil(math.prod(shape) / sum(shape)) - 1)


def cp_compose(weights: np.ndarray | None, factors: Sequence[np.ndarray]) -> np.ndarray:
    """The tensor ``sum_r weights[r] * outer(A_1[:, r], ..., A_N[:, r])`` (weights default to 1)."""
    rank = factors[0].shape[1]
    w = np.ones(rank) if weights is None else np.asarray(weights, dtype=np.float64)
    modes = "abcdefghijklmnopqstuvwxyz"[: len(factors)]  # every letter but r
    subscripts = f"r,{','.join(m + 'r' for m in modes)}->{modes}"
    return np.einsum(subscripts, w, *(np.asarray(f, np.float64) for f in factors), optimize=True)


def _mttkrp(x: np.ndarray, factors: Sequence[np.ndarray], mode: int) -> np.ndarray:
    """``X_(mode)`` times the Khatri-Rao product of the other factors, as ``(I_mode, R)``.

    The largest other mode is contracted first with one matrix product, so the
    largest intermediate has ``prod(shape) / max_other * R`` entries.
    """
    rank = factors[0].shape[1]
    others = sorted((m for m in range(x.ndim) if m != mode), key=lambda m: x.shape[m])
    first = others[-1]
    t = np.transpose(x, [mode, *others]).reshape(-1, x.shape[first]) @ factors[first]
    t = t.reshape(*[x.shape[m] for m in (mode, *others[:-1])], rank)
    for m in reversed(others[:-1]):  # the last axis before r
        t = np.einsum("...ir,ir->...r", t, factors[m])
    return t


def _hosvd_init(x: np.ndarray, rank: int, seed: int) -> list[np.ndarray]:
    """Leading left singular vectors of each unfolding; seeded normal columns beyond ``I_n``."""
    rng = np.random.default_rng(seed)
    factors = []
    for n, size in enumerate(x.shape):
        unfolded = np.moveaxis(x, n, 0).reshape(size, -1)
        u = np.linalg.svd(unfolded, full_matrices=False)[0][:, :rank]
        if rank > u.shape[1]:
            extra = rng.standard_normal((size, rank - u.shape[1]))
            u = np.concatenate([u, extra / np.linalg.norm(extra, axis=0)], axis=1)
        factors.append(u)
    return factors


def _solve(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``rhs @ gram^-1`` for the symmetric ``gram``; its pseudo-inverse where it is singular."""
    try:
        return np.linalg.solve(gram, rhs.T).T
    except np.linalg.LinAlgError:
        return rhs @ np.linalg.pinv(gram, hermitian=True)


def _normalize(factor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norms = np.linalg.norm(factor, axis=0)
    return factor / np.where(norms > 0, norms, 1.0), norms


def cp_als(
    tensor: np.ndarray,
    rank: int,
    *,
    max_iter: int = 300,
    tol: float = 1e-8,
    seed: int = 0,
) -> CPResult:
    """Rank-``rank`` CP decomposition of ``tensor`` by alternating least squares.

    Deterministic: initialised from the HOSVD (the leading ``rank`` left
    singular vectors of each mode unfolding; where ``rank`` exceeds a mode's
    size, the extra columns are drawn from a normal distribution seeded with
    ``seed``), then ALS sweeps over the modes in order, each column normalised
    into ``weights``, until the relative error changes by less than ``tol``
    between sweeps or after ``max_iter`` sweeps. Finally the components are
    sorted by weight and their signs fixed (the largest-magnitude entry of each
    column of every factor but the last is positive).

    Args:
        tensor: An ``N``-way array (``N >= 2``), no zero-length mode.
        rank: Number of rank-1 components, ``>= 1``.
        max_iter: Most ALS sweeps.
        tol: Stop when the relative error changes by less than this in a sweep.
        seed: Seed of the columns initialised at random (only when ``rank``
            exceeds a mode's size).

    Returns:
        A :class:`CPResult`.

    Raises:
        ValueError: For ``rank < 1`` or a tensor with fewer than two modes.

    Example:
        >>> a, b, c = (np.random.default_rng(0).standard_normal((n, 2)) for n in (3, 4, 5))
        >>> result = cp_als(np.einsum("ir,jr,kr->ijk", a, b, c), 2)
        >>> result.relative_error < 1e-6
        True
    """
    x = np.asarray(tensor, dtype=np.float64)
    if x.ndim < 2 or 0 in x.shape:
        raise ValueError(f"tensor must have at least two non-empty modes, got shape {x.shape}")
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"rank must be an int >= 1, got {rank!r}")
    rank = int(rank)
    norm_sq = float(np.sum(x * x))
    factors = _hosvd_init(x, rank, seed)
    weights = np.ones(rank)
    if norm_sq == 0.0:
        return CPResult(np.zeros(rank), tuple(factors), 0.0, 0)
    grams = [f.T @ f for f in factors]
    error, iterations = np.inf, 0
    for sweep in range(1, max_iter + 1):
        iterations = sweep
        for n in range(x.ndim):
            m = _mttkrp(x, factors, n)
            v = np.prod([g for k, g in enumerate(grams) if k != n], axis=0)
            factors[n], weights = _normalize(_solve(v, m))
            grams[n] = factors[n].T @ factors[n]
        # ||X - X_R||^2 = ||X||^2 - 2 <X, X_R> + ||X_R||^2, from the last mode's MTTKRP.
        inner = float(np.sum(m * factors[-1] * weights))
        model_sq = float(weights @ np.prod(grams, axis=0) @ weights)
        new_error = math.sqrt(max(norm_sq - 2.0 * inner + model_sq, 0.0) / norm_sq)
        converged = abs(error - new_error) < tol
        error = new_error
        if converged:
            break
    order = np.argsort(-weights, kind="stable")
    weights, factors = weights[order], [f[:, order] for f in factors]
    for n in range(x.ndim - 1):
        signs = np.sign(factors[n][np.argmax(np.abs(factors[n]), axis=0), np.arange(rank)])
        signs[signs == 0] = 1.0
        factors[n] = factors[n] * signs
        factors[-1] = factors[-1] * signs
    exact = float(np.linalg.norm(x - cp_compose(weights, factors)) / math.sqrt(norm_sq))
    return CPResult(weights, tuple(factors), exact, iterations)
