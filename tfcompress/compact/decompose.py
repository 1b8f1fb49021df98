"""NumPy initialisations of compact blocks from a trained ``(kh, kw, cin, cout)`` Conv2D kernel.

Each function returns the factors a block is initialised with, and a
``compose_*`` function maps the factors back to the ``(kh, kw, cin, cout)``
kernel of the one convolution the block computes (every block here is linear
up to its final bias and activation, so this is exact), which is how the
reconstruction error is measured.

* :func:`separable_factors`: per input channel ``c``, the rank-``r`` SVD of
  ``W[:, :, c, :]`` viewed as a ``(kh*kw, cout)`` matrix gives ``r`` depthwise
  filters (left vectors times singular values) and their pointwise weights
  (right vectors).
* :func:`cp_als`: per output filter ``o``, a rank-``r`` CP (CANDECOMP/PARAFAC)
  approximation ``W[:, :, :, o] ~= sum_k b_ok (x) c_ok (x) a_ok`` by
  alternating least squares, started from the leading singular vectors of the
  vertical and horizontal unfoldings (HOSVD).
* :func:`fire_factors`: a squeeze basis from the SVD of the channel unfolding
  of what the fire block can represent, the expand kernels by projection.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "compose_fire",
    "compose_flattened",
    "compose_separable",
    "cp_als",
    "fire_factors",
    "relative_error",
    "separable_factors",
]


def relative_error(kernel: np.ndarray, approximation: np.ndarray) -> float:
    """``||kernel - approximation||_F / ||kernel||_F`` (0 for an all-zero kernel equal to it)."""
    norm = float(np.linalg.norm(kernel))
    diff = float(np.linalg.norm(np.asarray(kernel) - np.asarray(approximation)))
    return diff / norm if norm > 0 else diff


# --- separable -------------------------------------------------------------
def separable_factors(kernel: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Depthwise ``(kh, kw, cin, rank)`` and pointwise ``(1, 1, cin*rank, cout)`` kernels.

    ``DepthwiseConv2D`` with ``depth_multiplier=rank`` puts filter ``m`` of
    input channel ``c`` on channel ``c*rank + m``; the pointwise weights
    follow that order. Exact for ``rank = min(kh*kw, cout)``.
    """
    kh, kw, cin, cout = kernel.shape
    slices = np.transpose(kernel, (2, 0, 1, 3)).reshape(cin, kh * kw, cout)
    u, s, vt = np.linalg.svd(slices, full_matrices=False)  # batched over channels
    keep = min(rank, s.shape[1])
    depthwise = np.zeros((kh * kw, cin, rank))
    pointwise = np.zeros((cin, rank, cout))
    depthwise[:, :, :keep] = np.transpose(u[:, :, :keep] * s[:, None, :keep], (1, 0, 2))
    pointwise[:, :keep, :] = vt[:, :keep, :]
    return depthwise.reshape(kh, kw, cin, rank), pointwise.reshape(1, 1, cin * rank, cout)


def compose_separable(depthwise: np.ndarray, pointwise: np.ndarray) -> np.ndarray:
    """The ``(kh, kw, cin, cout)`` kernel of a depthwise + pointwise pair."""
    cin, rank = depthwise.shape[2:]
    p = pointwise.reshape(cin, rank, -1)
    return np.einsum("ijcm,cmo->ijco", depthwise, p)


# --- flattened ------------------------------------------------------------
def _leading(unfolded: np.ndarray, rank: int, rng: np.random.Generator) -> np.ndarray:
    """``(cout, n, rank)``: leading left singular vectors of each ``(n, m)`` matrix."""
    u, _, _ = np.linalg.svd(unfolded, full_matrices=False)
    cout, n, avail = u.shape
    out = rng.standard_normal((cout, n, rank)) / np.sqrt(n)
    keep = min(rank, avail)
    out[:, :, :keep] = u[:, :, :keep]
    return out


def _solve(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``rhs @ inv(gram)`` for a batch of symmetric ``(r, r)`` grams, ridge-regularised."""
    r = gram.shape[-1]
    ridge = 1e-12 * (np.trace(gram, axis1=1, axis2=2)[:, None, None] + 1e-30) * np.eye(r)
    return np.swapaxes(np.linalg.solve(gram + ridge, np.swapaxes(rhs, 1, 2)), 1, 2)


def cp_als(
    kernel: np.ndarray, rank: int, iterations: int = 50, seed: int = 0, tol: float = 1e-10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-filter rank-``rank`` CP factors of a ``(kh, kw, cin, cout)`` kernel.

    Returns ``(a, b, c)`` of shapes ``(cout, cin, rank)``, ``(cout, kh, rank)``,
    ``(cout, kw, rank)`` with ``W[i, j, ch, o] ~= sum_k b[o, i, k] c[o, j, k] a[o, ch, k]``.
    Each sweep solves the three least-squares problems in turn (a, then b,
    then c), for all filters at once; it stops after ``iterations`` sweeps or
    when the error changes by less than ``tol`` (relative). The norms of the
    three vectors of a component are balanced at the end. A filter that is
    exactly rank 1 is recovered exactly (its HOSVD start is already optimal).
    """
    kh, kw, cin, cout = kernel.shape
    rng = np.random.default_rng(seed)
    w = np.transpose(kernel, (3, 0, 1, 2))  # (cout, kh, kw, cin)
    b = _leading(w.reshape(cout, kh, kw * cin), rank, rng)
    c = _leading(np.transpose(w, (0, 2, 1, 3)).reshape(cout, kw, kh * cin), rank, rng)
    a = np.zeros((cout, cin, rank))
    norm = max(float(np.linalg.norm(w)), 1e-30)
    previous = np.inf
    for _ in range(iterations):
        gram = lambda x: np.einsum("onr,ons->ors", x, x)  # noqa: E731
        a = _solve(gram(b) * gram(c), np.einsum("oijx,oir,ojr->oxr", w, b, c))
        b = _solve(gram(a) * gram(c), np.einsum("oijx,oxr,ojr->oir", w, a, c))
        c = _solve(gram(a) * gram(b), np.einsum("oijx,oxr,oir->ojr", w, a, b))
        error = float(np.linalg.norm(w - np.einsum("oxr,oir,ojr->oijx", a, b, c))) / norm
        if abs(previous - error) <= tol * max(error, 1e-30) or error < 1e-12:
            break
        previous = error
    # Balance: each of the three vectors of a component gets the cube root of its norm.
    na, nb, nc = (np.linalg.norm(x, axis=1, keepdims=True) for x in (a, b, c))
    scale = np.cbrt(na * nb * nc)
    safe = lambda n: np.where(n > 0, n, 1.0)  # noqa: E731
    return a / safe(na) * scale, b / safe(nb) * scale, c / safe(nc) * scale


def compose_flattened(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The ``(kh, kw, cin, cout)`` kernel of CP factors from :func:`cp_als`."""
    return np.einsum("oxr,oir,ojr->ijxo", a, b, c)


# --- fire -----------------------------------------------------------------
def fire_factors(
    kernel: np.ndarray, squeeze: int, expand_1x1: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Squeeze ``(1, 1, cin, s)``, 1x1 expand ``(1, 1, s, e1)``, KxK expand ``(kh, kw, s, e3)``.

    Output channels ``[0, e1)`` come from the 1x1 expand, which sees only the
    centre tap ``((kh-1)//2, (kw-1)//2)``; channels ``[e1, cout)`` from the KxK
    expand. The block's kernel is therefore ``S @ E`` where ``E`` is the
    *target* ``T``: the full kernel of channels ``[e1, cout)`` and the centre
    tap of channels ``[0, e1)``. The squeeze is ``U_s``, the top-``s`` left
    singular vectors of ``T`` unfolded to ``(cin, ...)`` (the input-channel
    directions carrying most of its energy) and ``E = U_s^T T``, so ``S @ E``
    is the best rank-``s`` approximation of ``T`` over the channel mode
    (Eckart-Young); the off-centre taps of channels ``[0, e1)`` are lost.
    """
    kh, kw, cin, _ = kernel.shape
    ci, cj = (kh - 1) // 2, (kw - 1) // 2
    centre = kernel[ci, cj, :, :expand_1x1]  # (cin, e1)
    spatial = np.transpose(kernel[:, :, :, expand_1x1:], (2, 0, 1, 3)).reshape(cin, -1)
    u, _, _ = np.linalg.svd(np.concatenate([centre, spatial], axis=1), full_matrices=False)
    basis = np.zeros((cin, squeeze))
    keep = min(squeeze, u.shape[1])
    basis[:, :keep] = u[:, :keep]
    expand_kxk = np.einsum("ct,ijco->ijto", basis, kernel[:, :, :, expand_1x1:])
    expand_1 = (basis.T @ centre)[None, None]
    return basis[None, None], expand_1, expand_kxk


def compose_fire(
    squeeze: np.ndarray, expand_1x1: np.ndarray, expand_kxk: np.ndarray, kernel_size: tuple
) -> np.ndarray:
    """The ``(kh, kw, cin, e1 + e3)`` kernel a fire block computes (1x1 channels first)."""
    kh, kw = kernel_size
    s = squeeze[0, 0]  # (cin, s)
    e1 = expand_1x1.shape[-1]
    out = np.zeros((kh, kw, s.shape[0], e1 + expand_kxk.shape[-1]))
    out[(kh - 1) // 2, (kw - 1) // 2, :, :e1] = s @ expand_1x1[0, 0]
    out[:, :, :, e1:] = np.einsum("ct,ijto->ijco", s, expand_kxk)
    return out
