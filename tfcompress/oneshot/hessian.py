"""The layer Hessian ``H = 2 X X^T / n``: streamed accumulation, dampening, inverse factor.

For a linear map ``y = W x`` and the squared output error, the Hessian with
respect to each row of ``W`` is the same ``C x C`` matrix ``H = 2 X X^T / n``
over the ``n`` calibration input vectors (columns of ``X``). It is summed over
calibration batches (:class:`HessianSum`), so only one batch of activations and
one ``C x C`` matrix per problem are ever held.

The solvers need ``H^-1`` through its upper Cholesky factor. ``H`` is singular
when there are fewer input vectors than columns or when an input is constant,
so ``lambda * mean(diag H)`` is added to the diagonal first (``lambda = 0.01``
by default, as in OBC/SparseGPT/GPTQ); when the Cholesky factorisation still
fails, ``lambda`` is multiplied by 10 and the failure logged, up to
:data:`MAX_DAMPING`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator

import numpy as np

__all__ = [
    "MAX_DAMPING",
    "DampedInverse",
    "HessianSum",
    "inverse_cholesky",
    "single_threaded_blas",
]

logger = logging.getLogger("tfcompress.oneshot")

#: The largest relative dampening tried before giving up on a layer.
MAX_DAMPING = 100.0


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Runs NumPy's BLAS on one thread inside the block (when ``threadpoolctl`` is installed).

    The one-shot matrices are small (at most a few hundred columns) and
    TensorFlow's thread pools run next to them; on shared cores, idle
    multi-threaded BLAS workers spin against those threads and a 512 x 512
    factorisation measured 100x slower than on one thread.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional dependency
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


class HessianSum:
    """Sums ``X^T X`` over calibration batches for ``G`` problems of ``C`` columns.

    Rows are added in float32 matrix products and summed in float64.

    Args:
        groups: Number of independent problems ``G``.
        columns: Columns ``C``.

    Example:
        >>> acc = HessianSum(1, 16)
        >>> acc.add_rows(np.ones((10, 16), np.float32))
        >>> acc.hessian().shape
        (1, 16, 16)
    """

    def __init__(self, groups: int, columns: int):
        self.total = np.zeros((groups, columns, columns), np.float64)
        self.count = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the sum."""
        return int(self.total.nbytes)

    def add_rows(self, rows: np.ndarray) -> None:
        """Adds input vectors ``rows`` of shape ``(n, C)`` (one problem, ``G == 1``)."""
        rows = np.asarray(rows, np.float32)
        self.total[0] += rows.T @ rows
        self.count += rows.shape[0]

    def add_grouped(self, rows: np.ndarray) -> None:
        """Adds ``(G, n, C)`` input vectors, one set per problem."""
        rows = np.asarray(rows, np.float32)
        self.total += np.matmul(np.swapaxes(rows, 1, 2), rows)
        self.count += rows.shape[1]

    def hessian(self) -> np.ndarray:
        """``2 X X^T / n`` as float64 ``(G, C, C)`` (zeros before any rows)."""
        return self.total * (2.0 / max(self.count, 1))


@dataclasses.dataclass
class DampedInverse:
    """The factor the solvers use, and how it was obtained.

    Attributes:
        chol: ``(G, C, C)`` float32 upper Cholesky factor ``U`` of ``(H + d I)^-1``.
        inverse: ``(G, C, C)`` float64 ``(H + d I)^-1`` (for exact OBS).
        damping: The relative dampening ``lambda`` finally used.
        tries: How many factorisations were attempted.
    """

    chol: np.ndarray
    inverse: np.ndarray
    damping: float
    tries: int


def inverse_cholesky(
    hessian: np.ndarray, damping: float = 0.01, *, name: str = "layer"
) -> DampedInverse:
    """Dampens ``H`` and factors its inverse, escalating the dampening on failure.

    ``H + lambda * mean(diag H) * I`` (per problem; a problem whose diagonal is
    all zero, i.e. whose inputs were all zero, uses 1 for the mean) is inverted
    through its Cholesky factor; the upper factor of the inverse is returned.

    Args:
        hessian: ``(G, C, C)`` symmetric positive semi-definite.
        damping: The relative dampening ``lambda`` (> 0) to start with.
        name: Layer name for the log message and errors.

    Returns:
        A :class:`DampedInverse`.

    Raises:
        ValueError: If ``H`` has NaN/Inf entries, or no dampening up to
            :data:`MAX_DAMPING` makes it positive definite.

    Example:
        >>> factor = inverse_cholesky(HessianSum(...).hessian())
        >>> factor.chol.shape
    """
    h = np.asarray(hessian, np.float64)
    if not np.all(np.isfinite(h)):
        raise ValueError(
            f"layer {name!r}: the Hessian of its calibration inputs has NaN/Inf entries "
            "(the inputs reaching it are not finite)"
        )
    columns = h.shape[-1]
    mean_diag = np.mean(np.diagonal(h, axis1=1, axis2=2), axis=1)
    mean_diag = np.where(mean_diag > 0, mean_diag, 1.0)
    eye = np.eye(columns)
    lam, tries = float(damping), 0
    while True:
        tries += 1
        damped = h + (lam * mean_diag)[:, None, None] * eye
        try:
            lower = np.linalg.cholesky(damped)
            identity = np.broadcast_to(eye, damped.shape)
            lower_inv = np.linalg.solve(lower, identity)
            inverse = np.swapaxes(lower_inv, 1, 2) @ lower_inv
            # Upper factor U of the inverse (inverse = U^T U): the transposed lower factor.
            upper = np.swapaxes(np.linalg.cholesky(inverse), 1, 2)
            if np.all(np.isfinite(upper)):
                return DampedInverse(upper.astype(np.float32), inverse, lam, tries)
        except np.linalg.LinAlgError:
            pass
        if lam * 10 > MAX_DAMPING:
            raise ValueError(
                f"layer {name!r}: its Hessian is not positive definite even with dampening "
                f"{lam:g} x mean(diag H); its calibration inputs are degenerate"
            )
        logger.warning(
            "layer %r: Cholesky factorisation failed with dampening %g x mean(diag H); "
            "retrying with %g",
            name,
            lam,
            lam * 10,
        )
        lam *= 10
