"""Matrix-free inverse of the damped empirical Fisher (M-FAC), for second-order pruning.

From ``m`` gradients ``g_1 .. g_m`` of ``d`` parameters (rows of ``G``, shape
``(m, d)``), the damped empirical Fisher is::

    F = lambda * I + (1/m) * sum_i g_i g_i^T = lambda * I + G^T G / m

``F`` is ``d x d`` and never formed. M-FAC's static algorithm (Frantar,
Kurtic & Alistarh, 2021) adds the rank-one terms one at a time with the
Sherman-Morrison formula. With ``F_0 = lambda * I`` and ``F_i = F_{i-1} +
g_i g_i^T / m``::

    v_i   = F_{i-1}^-1 g_i
    F_i^-1 = F_{i-1}^-1 - v_i v_i^T / (m + g_i^T v_i)

Every ``v_i`` is a combination of the gradients, ``v_i = sum_k C[i, k] g_k``,
so the recursion runs on the ``m x m`` coefficients ``C`` alone, given the
Gram matrix ``D = G G^T`` (``O(d m^2)`` once, then ``O(m^3)``)::

    q_j   = v_j^T g_i = (C D)[j, i]                       for j < i
    C[i]  = e_i / lambda - sum_{j<i} q_j / den_j * C[j]
    den_i = m + g_i^T v_i = m + (C D)[i, i]               (always >= m > 0)

and then, with ``W = C^T diag(1 / den) C`` (symmetric, ``m x m``)::

    F^-1 x        = x / lambda - G^T (W (G x))            O(d m) per vector
    diag(F^-1)_q  = 1 / lambda - sum_{k,l} G[k, q] W[k, l] G[l, q]

(``W`` equals ``(m lambda I + G G^T)^-1 / lambda``, the Woodbury identity in
one step; the recursion is the paper's and is what the dynamic, sliding-window
variant builds on.)

Block-wise: with ``block_size = B`` the flattened parameter vector is cut into
consecutive blocks of ``B`` and ``F`` is taken block-diagonal, each block
``lambda * I + G_b^T G_b / m`` from the same ``m`` gradients restricted to the
block (WoodFisher's and M-FAC's blocked approximation). Each block is rank
``m`` on its own, so a smaller ``B`` keeps more curvature per parameter; the
extra memory is one ``m x m`` matrix per block (``8 m^2 d / B`` bytes).

WoodFisher (Singh & Alistarh, 2020) uses ``F^-1`` for Optimal Brain Surgeon
pruning: removing weight ``q`` costs about ``rho_q = w_q^2 / (2 [F^-1]_qq)``
in loss, and the other weights compensate by ``dw = -w_q F^-1 e_q /
[F^-1]_qq``. :meth:`InverseFisher.scores` and
:meth:`InverseFisher.removal_update` compute these.

References:
    Frantar, Kurtic, Alistarh. "M-FAC: Efficient Matrix-Free Approximations of
    Second-Order Information", NeurIPS 2021.
    Singh, Alistarh. "WoodFisher: Efficient Second-Order Approximation for
    Neural Network Compression", NeurIPS 2020.
    Hassibi, Stork. "Second order derivatives for network pruning: Optimal
    Brain Surgeon", NeurIPS 1992.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["InverseFisher", "relative_damping"]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def relative_damping(gradients: Any, damping: float) -> float:
    """``damping`` times the mean diagonal of the empirical Fisher ``G^T G / m``.

    The mean diagonal is the mean squared gradient entry, ``||G||_F^2 / (m d)``,
    so the damping follows the gradients' scale. All-zero gradients give
    ``damping`` itself (``F`` is then ``damping * I`` and every score is
    proportional to ``w^2``).

    Args:
        gradients: An ``(m, d)`` array, or a list of ``(m, ...)`` arrays (one per
            weight) that together make the parameter vector.
        damping: The relative damping, a finite number > 0.

    Returns:
        The absolute damping ``lambda`` for :class:`InverseFisher`.

    Raises:
        ValueError: For a damping that is not a finite number > 0.
    """
    if (
        isinstance(damping, bool)
        or not isinstance(damping, (int, float, np.floating))
        or not (math.isfinite(float(damping)) and damping > 0)
    ):
        raise ValueError(f"damping must be a finite number > 0, got {damping!r}")
    parts = gradients if isinstance(gradients, (list, tuple)) else [gradients]
    total, count = 0.0, 0
    for part in parts:
        array = np.asarray(part, np.float64)
        total += float(np.sum(np.square(array)))
        count += array.size
    mean = total / count if count else 0.0
    return float(damping) * mean if mean > 0 and math.isfinite(mean) else float(damping)


class InverseFisher:
    """``F^-1`` of ``F = damping * I + G^T G / m`` from ``m`` gradients, never formed.

    Setup (the constructor) costs ``O(d m^2 + (d / B) m^3)`` time; each
    inverse-Hessian-vector product then costs ``O(d m)`` and the diagonal
    ``O(d m^2)`` once (cached). Memory: the gradients, kept in their dtype
    (float32 or float64: ``m d`` values), plus one ``m x m`` float64 matrix
    per block. All arithmetic is float64, one block at a time (a float64
    copy of one block's gradients), and so are the results.

    Args:
        gradients: ``(m, d)`` array, one gradient per row (e.g. per-sample or
            per-mini-batch loss gradients of the flattened parameters). A 1-D
            array is one gradient. Integer arrays are read as float64.
        damping: ``lambda > 0``, absolute (added to the diagonal as is).
        block_size: ``B``: take ``F`` block-diagonal over consecutive blocks
            of ``B`` parameters (the last block may be shorter). None: one
            block of all ``d`` (the full M-FAC inverse).

    Raises:
        ValueError: For gradients that are not 1-D/2-D, empty, or hold
            NaN/Inf; a damping that is not a finite number > 0; a block size
            that is not a positive integer.

    Example:
        >>> g = np.random.default_rng(0).standard_normal((8, 100))
        >>> fisher = InverseFisher(g, damping=1e-2)
        >>> f = 1e-2 * np.eye(100) + g.T @ g / 8
        >>> np.allclose(fisher.ihvp(np.ones(100)), np.linalg.solve(f, np.ones(100)))
        True

    References:
        Frantar, Kurtic, Alistarh. "M-FAC: Efficient Matrix-Free
        Approximations of Second-Order Information", NeurIPS 2021.
    """

    def __init__(self, gradients: Any, damping: float, block_size: int | None = None):
        grads = np.asarray(gradients)
        if grads.dtype.kind in "biu":
            grads = grads.astype(np.float64)
        if grads.dtype.kind != "f":
            raise ValueError(f"gradients must be a numeric array, got dtype {grads.dtype}")
        if grads.dtype not in (np.float32, np.float64):
            grads = grads.astype(np.float32)
        if grads.ndim == 1:
            grads = grads[None]
        if grads.ndim != 2 or grads.shape[0] == 0 or grads.shape[1] == 0:
            raise ValueError(
                f"gradients must be an (m, d) array with m >= 1 gradients of d >= 1 "
                f"parameters, got shape {np.shape(gradients)}"
            )
        if not np.all(np.isfinite(grads)):
            bad = int(grads.size - np.count_nonzero(np.isfinite(grads)))
            raise ValueError(f"gradients hold {bad} NaN/Inf value(s); the Fisher needs finite ones")
        if isinstance(damping, bool) or not isinstance(damping, (int, float, np.floating)):
            raise ValueError(f"damping must be a finite number > 0, got {damping!r}")
        if not (math.isfinite(float(damping)) and damping > 0):
            raise ValueError(f"damping must be a finite number > 0, got {damping!r}")
        m, d = grads.shape
        size = d if block_size is None else min(_positive_int("block_size", block_size), d)
        self.num_gradients, self.dim, self.block_size = m, d, size
        self.damping = float(damping)
        self.dtype = grads.dtype
        self._num_blocks = -(-d // size)
        pad = self._num_blocks * size - d
        if pad:
            grads = np.pad(grads, ((0, 0), (0, pad)))  # zero columns: F = lambda there
        # (blocks, m, B): one contiguous gradient matrix per block.
        self._blocks = np.ascontiguousarray(grads.reshape(m, self._num_blocks, size).swapaxes(0, 1))
        self._weights = self._coefficients(self._gram())
        self._diagonal: np.ndarray | None = None

    # --- setup
    def _block(self, index: int) -> np.ndarray:
        """Block ``index``'s gradients ``G_b``, ``(m, B)``, as float64."""
        return self._blocks[index].astype(np.float64)

    def _gram(self) -> np.ndarray:
        """``D_b = G_b G_b^T`` per block, float64, shape ``(blocks, m, m)``."""
        m = self.num_gradients
        gram = np.empty((self._num_blocks, m, m), np.float64)
        # One 2-D product per block: NumPy's stacked matmul is several times slower here.
        for b in range(self._num_blocks):
            part = self._block(b)
            np.matmul(part, part.T, out=gram[b])
        return gram

    def _coefficients(self, gram: np.ndarray) -> np.ndarray:
        """``W_b = C_b^T diag(1/den_b) C_b`` by M-FAC's Sherman-Morrison recursion."""
        blocks, m, _ = gram.shape
        coeff = np.zeros((blocks, m, m), np.float64)
        den = np.empty((blocks, m), np.float64)
        for i in range(m):
            if i:
                # q[b, j] = v_j^T g_i for the earlier gradients j < i.
                q = np.einsum("bjk,bk->bj", coeff[:, :i], gram[:, :, i])
                coeff[:, i] = -np.einsum("bj,bjk->bk", q / den[:, :i], coeff[:, :i])
            coeff[:, i, i] += 1.0 / self.damping
            den[:, i] = m + np.einsum("bk,bk->b", coeff[:, i], gram[:, :, i])
        return np.einsum("bik,bi,bil->bkl", coeff, 1.0 / den, coeff)

    # --- products
    def ihvp(self, vectors: Any) -> np.ndarray:
        """``F^-1 x``: the inverse-Hessian-vector product, ``O(d m)`` per vector.

        Computed in float64 (one block at a time): ``x / lambda`` and
        the correction cancel in the span of the gradients, which float32
        would not survive at small damping.

        Args:
            vectors: A ``(d,)`` vector or an ``(n, d)`` array of ``n`` vectors (rows).

        Returns:
            ``F^-1`` times each vector, float64, the input's shape.

        Raises:
            ValueError: If the last axis is not ``d`` long or values are not finite.
        """
        x = np.asarray(vectors, np.float64)
        if x.ndim not in (1, 2) or x.shape[-1] != self.dim:
            raise ValueError(
                f"vectors must have shape ({self.dim},) or (n, {self.dim}), got {x.shape}"
            )
        if not np.all(np.isfinite(x)):
            raise ValueError("vectors hold NaN/Inf values")
        flat = x.reshape(-1, self.dim)
        size = self.block_size
        padded = np.pad(flat, ((0, 0), (0, self._num_blocks * size - self.dim)))
        result = np.empty_like(padded)
        for b in range(self._num_blocks):
            columns = slice(b * size, (b + 1) * size)
            part = self._block(b)  # (m, B)
            mixed = (padded[:, columns] @ part.T) @ self._weights[b]  # (n, m); W symmetric
            result[:, columns] = padded[:, columns] / self.damping - mixed @ part
        return result[:, : self.dim].reshape(x.shape)

    def diagonal(self) -> np.ndarray:
        """``diag(F^-1)``, shape ``(d,)``, float64; computed once, ``O(d m^2)``.

        Every entry lies in ``(0, 1 / damping]``.
        """
        if self._diagonal is None:
            out = np.empty((self._num_blocks, self.block_size), np.float64)
            for b in range(self._num_blocks):
                part = self._block(b)
                out[b] = np.einsum("kq,kq->q", part, self._weights[b] @ part)
            diag = 1.0 / self.damping - out.reshape(-1)[: self.dim]
            # Exact arithmetic keeps it in (0, 1/lambda]; clip rounding at the ends.
            diag = np.clip(diag, np.finfo(np.float64).tiny, 1.0 / self.damping)
            self._diagonal = diag
        return self._diagonal

    # --- Optimal Brain Surgeon with this Fisher (WoodFisher)
    def _check_weights(self, weights: Any) -> np.ndarray:
        w = np.asarray(weights)
        if w.shape != (self.dim,):
            raise ValueError(f"weights must have shape ({self.dim},), got {w.shape}")
        return w

    def scores(self, weights: Any) -> np.ndarray:
        """OBS saliency ``rho_q = w_q^2 / (2 [F^-1]_qq)``: the loss increase of removing ``q``.

        Args:
            weights: The ``(d,)`` flattened weights.

        Returns:
            ``(d,)`` float64 scores (0 for weights that are already zero).
        """
        w = self._check_weights(weights).astype(np.float64)
        return np.square(w) / (2.0 * self.diagonal())

    def removal_update(self, weights: Any, pruned: Any) -> np.ndarray:
        """WoodFisher's change of the weights when the ``pruned`` ones are removed.

        ``dw = -sum_{q in pruned} w_q F^-1 e_q / [F^-1]_qq``: each weight's OBS
        update, summed (WoodFisher's independent approximation), which is one
        product ``-F^-1 u`` with ``u_q = w_q / [F^-1]_qq`` on the pruned set.
        For one weight it is exact OBS: ``(w + dw)_q = 0``; for several, the
        pruned entries of ``w + dw`` are near zero and are set to zero by the
        caller (a mask).

        Args:
            weights: The ``(d,)`` flattened weights.
            pruned: Indices, or a ``(d,)`` boolean array, of the weights removed.

        Returns:
            ``dw``, shape ``(d,)``, float64.
        """
        w = self._check_weights(weights).astype(np.float64)
        selection = np.asarray(pruned)
        if selection.dtype == bool:
            if selection.shape != (self.dim,):
                raise ValueError(
                    f"pruned as a boolean array must have shape ({self.dim},), "
                    f"got {selection.shape}"
                )
            chosen = selection
        else:
            chosen = np.zeros(self.dim, bool)
            chosen[selection.reshape(-1).astype(np.int64)] = True
        u = np.where(chosen, w / self.diagonal(), 0.0)
        return -self.ihvp(u)
