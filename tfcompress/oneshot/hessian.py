"""The layer Hessian ``H = 2 X X^T / n``: streamed accumulation, dampening, inverse factor.

For a linear map ``y = W x`` and the squared output error, the Hessian with
respect to each row of ``W`` is the same ``C x C`` matrix ``H = 2 X X^T / n``
over the ``n`` calibration input vectors (columns of ``X``). It is summed over
calibration batches (:class:`HessianSum`), so only one batch of activations and
one ``C x C`` matrix per problem are ever held.

The solvers need ``H^-1`` through its upper Cholesky factor ``U``
(``H^-1 = U^T U``). ``H`` is singular when there are fewer input vectors than
columns or when an input is constant, so ``lambda * mean(diag H)`` is added to
the diagonal first (``lambda = 0.01`` by default, as in OBC/SparseGPT/GPTQ);
when the factorisation still fails, ``lambda`` is multiplied by 10 and the
failure logged, up to :data:`MAX_DAMPING`.

``U`` is found without forming ``H^-1``. Write the damped ``H = V V^T`` with
``V`` *upper* triangular (the Cholesky factorisation run from the last column
to the first: with ``P`` the reversal permutation and ``P H P = L L^T``,
``V = P L P``). Then ``U = V^-1`` is upper triangular with a positive
diagonal and ``U^T U = V^-T V^-1 = (V V^T)^-1 = H^-1``, so it *is* the upper
Cholesky factor of ``H^-1`` (which is unique). Both steps are blocked
(:data:`BLOCK` columns at a time, one matrix product per block) and run in
place in the upper triangle of one ``C x C`` float64 array, reading ``H`` from
its lower triangle; the only other big array is the float32 ``U`` the solvers
read. With ``overwrite``, that array is the Hessian itself, restored from its
lower triangle afterwards. Memory matters here: the widest layers of a large
model (a 4096-column FFN projection) have 128 MiB Hessians, and forming
``H^-1`` and factoring it again held about six of them at once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import numpy as np

__all__ = [
    "ACCUMULATE_COLUMNS",
    "BLOCK",
    "MAX_DAMPING",
    "DampedInverse",
    "HessianSum",
    "inverse_cholesky",
    "single_threaded_blas",
]

logger = logging.getLogger("tfcompress.oneshot")

#: The largest relative dampening tried before giving up on a layer.
MAX_DAMPING = 100.0

#: Columns per block of the blocked factorisation and of the Hessian accumulation.
BLOCK = 128

#: Columns of ``X^T X`` computed per matrix product when adding rows (bounds its float32 temporary).
ACCUMULATE_COLUMNS = 512


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


def _add_gram(total: np.ndarray, rows: np.ndarray) -> None:
    """``total += rows^T rows`` for one problem, exactly symmetric, in column blocks.

    ``rows^T rows`` in one product would be a ``C x C`` float32 temporary (half
    a Hessian); blocks of :data:`ACCUMULATE_COLUMNS` keep it to ``C x 512``.
    The upper blocks are computed and mirrored, so the sum stays symmetric.
    """
    columns = rows.shape[1]
    if columns <= ACCUMULATE_COLUMNS:
        total += rows.T @ rows
        return
    for start in range(0, columns, ACCUMULATE_COLUMNS):
        stop = min(start + ACCUMULATE_COLUMNS, columns)
        block = rows[:, start:stop]
        total[start:stop, start:stop] += block.T @ block
        if stop < columns:
            side = block.T @ rows[:, stop:]
            total[start:stop, stop:] += side
            total[stop:, start:stop] += side.T
            del side  # before the next block's is made


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
        self.total: np.ndarray | None = np.zeros((groups, columns, columns), np.float64)
        self.count = 0
        self._nbytes = int(self.total.nbytes)

    @property
    def nbytes(self) -> int:
        """Bytes of the sum (also once :meth:`take_hessian` has handed it over)."""
        return self._nbytes

    def _sum(self) -> np.ndarray:
        if self.total is None:
            raise ValueError("this Hessian sum was handed over by take_hessian()")
        return self.total

    def add_rows(self, rows: np.ndarray) -> None:
        """Adds input vectors ``rows`` of shape ``(n, C)`` (one problem, ``G == 1``)."""
        rows = np.asarray(rows, np.float32)
        _add_gram(self._sum()[0], rows)
        self.count += rows.shape[0]

    def add_grouped(self, rows: np.ndarray) -> None:
        """Adds ``(G, n, C)`` input vectors, one set per problem."""
        rows = np.asarray(rows, np.float32)
        total = self._sum()
        for group in range(rows.shape[0]):
            _add_gram(total[group], rows[group])
        self.count += rows.shape[1]

    def hessian(self) -> np.ndarray:
        """``2 X X^T / n`` as float64 ``(G, C, C)`` (zeros before any rows); a new array."""
        return self._sum() * (2.0 / max(self.count, 1))

    def take_hessian(self) -> np.ndarray:
        """:meth:`hessian` made in place in the sum, which is handed over (no copy).

        The sum is gone afterwards (``total`` is None); ``count`` and
        ``nbytes`` stay. Saves the copy :meth:`hessian` makes.
        """
        total = self._sum()
        self.total = None
        total *= 2.0 / max(self.count, 1)
        return total


class DampedInverse:
    """The factor the solvers use, and how it was obtained.

    Attributes:
        chol: ``(G, C, C)`` float32 upper Cholesky factor ``U`` of ``(H + d I)^-1``.
        inverse: ``(G, C, C)`` float64 ``(H + d I)^-1`` (for exact OBS): computed
            in float64 by :func:`inverse_cholesky` with ``inverse=True``, else
            formed from the float32 ``chol`` on first access (``U^T U``, float32
            accurate) and kept.
        damping: The relative dampening ``lambda`` finally used.
        tries: How many factorisations were attempted.
    """

    def __init__(
        self,
        chol: np.ndarray,
        inverse: np.ndarray | None,
        damping: float,
        tries: int,
    ):
        self.chol = chol
        self._inverse = inverse
        self.damping = damping
        self.tries = tries

    @property
    def inverse(self) -> np.ndarray:
        if self._inverse is None:
            u = self.chol.astype(np.float64)
            self._inverse = np.matmul(np.swapaxes(u, 1, 2), u)
        return self._inverse

    def __repr__(self) -> str:
        return (
            f"DampedInverse(shape={self.chol.shape}, damping={self.damping:g}, tries={self.tries})"
        )


def _blocks(columns: int) -> list[tuple[int, int]]:
    return [(start, min(start + BLOCK, columns)) for start in range(0, columns, BLOCK)]


def _finite(a: np.ndarray) -> bool:
    """Whether a ``(C, C)`` array is all finite (checked in row blocks: no ``C x C`` mask)."""
    return all(bool(np.all(np.isfinite(a[start:stop]))) for start, stop in _blocks(a.shape[0]))


def _factor_upper(a: np.ndarray, diagonal: np.ndarray) -> None:
    """``V`` upper with ``V V^T = H`` into the upper triangle of ``a`` (diagonal included).

    ``H`` is read from the strictly lower triangle of ``a`` and from
    ``diagonal`` (the damped diagonal), which are left as they are. Blocked
    and left-looking, from the last block column to the first; for block
    ``j`` (columns ``r`` after it, ``1`` before it):
    ``V_jj V_jj^T = H_jj - V_jr V_jr^T`` (a small reversed Cholesky) and
    ``V_1j = (H_1j - V_1r V_jr^T) V_jj^-T``.

    Raises:
        numpy.linalg.LinAlgError: If ``H`` is not positive definite.
    """
    columns = a.shape[0]
    for start, stop in reversed(_blocks(columns)):
        lower = np.tril(a[start:stop, start:stop], -1)
        block = lower + lower.T
        block[np.diag_indices(stop - start)] = diagonal[start:stop]
        right = a[start:stop, stop:]  # V_jr, already final
        if stop < columns:
            block -= right @ right.T
        # The reversed Cholesky: P B P = L L^T gives B = (P L P)(P L P)^T, P L P upper.
        v = np.linalg.cholesky(block[::-1, ::-1])[::-1, ::-1]
        if start:
            above = a[start:stop, :start].T  # H_1j from the lower triangle
            if stop < columns:
                above = above - a[:start, stop:] @ right.T
            # V_1j V_jj^T = above: a triangular solve (LU of a triangular matrix never pivots).
            a[:start, start:stop] = np.linalg.solve(v, above.T).T
        _set_upper(a[start:stop, start:stop], v)


def _set_upper(target: np.ndarray, source: np.ndarray) -> None:
    mask = np.triu(np.ones(target.shape, bool))
    target[mask] = source[mask]


def _invert_upper(a: np.ndarray) -> None:
    """Replaces the upper triangular ``V`` in the upper triangle of ``a`` by ``V^-1``.

    The strictly lower triangle is neither read nor written. Blocked, left to
    right: with ``U_11`` the inverse of the leading part already in place,
    ``U_1j = -U_11 V_1j V_jj^-1`` and ``U_jj = V_jj^-1``; the product by the
    triangular ``U_11`` runs block row by block row, top down, so that each
    block row of ``V_1j`` is overwritten only after the last time it is read.
    """
    blocks = _blocks(a.shape[0])
    for index, (start, stop) in enumerate(blocks):
        inverse = np.triu(np.linalg.inv(np.triu(a[start:stop, start:stop])))
        if start:
            above = a[:start, start:stop]
            for top, bottom in blocks[:index]:
                product = np.triu(a[top:bottom, top:bottom]) @ above[top:bottom]
                if bottom < start:
                    product += a[top:bottom, bottom:start] @ above[bottom:start]
                above[top:bottom] = product
            above[...] = -(above @ inverse)
        _set_upper(a[start:stop, start:stop], inverse)


def _upper_to(out: np.ndarray, a: np.ndarray) -> None:
    """The upper triangle of ``a`` into ``out`` (zeros below), block row by block row."""
    for start, stop in _blocks(a.shape[0]):
        out[start:stop, :start] = 0
        out[start:stop, start:stop] = np.triu(a[start:stop, start:stop])
        out[start:stop, stop:] = a[start:stop, stop:]


def _restore(a: np.ndarray, diagonal: np.ndarray) -> None:
    """Rebuilds the symmetric ``H`` in ``a`` from its strictly lower triangle and ``diagonal``."""
    for start, stop in _blocks(a.shape[0]):
        block = a[start:stop, start:stop]
        mask = np.triu(np.ones(block.shape, bool), 1)
        block[mask] = block.T[mask]
        a[start:stop, stop:] = a[stop:, start:stop].T
    np.einsum("ii->i", a)[...] = diagonal


def _factor_problem(
    a: np.ndarray,
    shift: float,
    chol: np.ndarray,
    inverse: np.ndarray | None,
    restore: bool,
) -> bool:
    """Factors one damped problem held in ``a`` into ``chol`` (and ``inverse``); False: failed."""
    diagonal = np.diagonal(a).copy()
    try:
        _factor_upper(a, diagonal + shift)
        _invert_upper(a)
        _upper_to(chol, a)
        if not _finite(chol):
            return False
        if inverse is not None:
            upper = np.triu(a)
            np.matmul(upper.T, upper, out=inverse)
        return True
    except np.linalg.LinAlgError:
        return False
    finally:
        if restore:
            _restore(a, diagonal)


def inverse_cholesky(
    hessian: np.ndarray,
    damping: float = 0.01,
    *,
    name: str = "layer",
    inverse: bool = False,
    overwrite: bool = False,
) -> DampedInverse:
    """Dampens ``H`` and factors its inverse, escalating the dampening on failure.

    ``H + lambda * mean(diag H) * I`` (per problem; a problem whose diagonal is
    all zero, i.e. whose inputs were all zero, uses 1 for the mean) is
    factored as ``V V^T`` with ``V`` upper triangular, and ``U = V^-1``, the
    upper Cholesky factor of its inverse, is returned (see the module
    docstring). The ``G`` problems are factored one at a time; all of them use
    the same ``lambda``, the smallest that works for every one. Only the lower
    triangle of ``H`` is read.

    Memory: ``U`` (float32, half of ``H``), one problem's float64 work array
    (none with ``overwrite``) and blocks of ``C x`` :data:`BLOCK`; plus the
    float64 inverse with ``inverse``.

    Args:
        hessian: ``(G, C, C)`` symmetric positive semi-definite.
        damping: The relative dampening ``lambda`` (> 0) to start with.
        name: Layer name for the log message and errors.
        inverse: Also compute ``(H + d I)^-1`` in float64 (exact OBS needs it).
        overwrite: Use ``hessian`` (a writable, C-contiguous float64 array) as
            the work array. It is rebuilt from its lower triangle and diagonal
            before returning, even on error: unchanged when it was symmetric.

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
    in_place = overwrite and h is hessian and h.flags.c_contiguous and h.flags.writeable
    if not all(_finite(problem) for problem in h):
        raise ValueError(
            f"layer {name!r}: the Hessian of its calibration inputs has NaN/Inf entries "
            "(the inputs reaching it are not finite)"
        )
    groups, columns = h.shape[0], h.shape[-1]
    mean_diag = np.mean(np.diagonal(h, axis1=1, axis2=2), axis=1)
    mean_diag = np.where(mean_diag > 0, mean_diag, 1.0)
    chol = np.empty((groups, columns, columns), np.float32)
    inv = np.empty((groups, columns, columns), np.float64) if inverse else None
    lam, tries = float(damping), 0
    while True:
        tries += 1
        ok = True
        for group in range(groups):
            work = h[group] if in_place else np.array(h[group], np.float64, order="C")
            ok = _factor_problem(
                work,
                lam * float(mean_diag[group]),
                chol[group],
                None if inv is None else inv[group],
                restore=in_place,
            )
            del work
            if not ok:
                break
        if ok:
            return DampedInverse(chol, inv, lam, tries)
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
