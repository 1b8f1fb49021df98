"""Peak memory of the one-shot numerics, traced (NumPy reports its allocations to tracemalloc).

The widest layers of a large model have 128 MiB Hessians (4096 columns), so
the factorisation must not hold several of them: these tests pin its peak, in
Hessians, on a 1024-column problem (a copy of H, H^-1 and two Cholesky factors
measured 6.5 Hessians before the blocked, in-place factorisation).
"""

import tracemalloc

import numpy as np
import pytest

from tfcompress.oneshot.engine import Settings, solve_layer
from tfcompress.oneshot.hessian import HessianSum, inverse_cholesky

# NumPy only: the same on every backend.
pytestmark = pytest.mark.jax

COLUMNS = 1024


def _hessian(columns=COLUMNS, rows=2 * COLUMNS):
    x = np.random.default_rng(0).normal(size=(rows, columns)).astype(np.float32)
    acc = HessianSum(1, columns)
    acc.add_rows(x)
    return acc.take_hessian()


def _peak_extra(function):
    """Bytes allocated at the peak of ``function()`` beyond what was live before it."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        result = function()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before, result


@pytest.mark.parametrize(("overwrite", "limit"), [(True, 0.8), (False, 1.8)])
def test_factor_peak_in_hessians(overwrite, limit):
    """In place: the float32 factor (half a Hessian) and blocks; else one float64 copy more.

    Measured 0.74 and 1.74 Hessians; the ``C x 128`` float64 blocks are a
    quarter of a Hessian at 1024 columns (a sixteenth at 4096).
    """
    h = _hessian()
    extra, factor = _peak_extra(lambda: inverse_cholesky(h, overwrite=overwrite))
    assert factor.chol.nbytes == h.nbytes // 2
    assert extra <= limit * h.nbytes, extra / h.nbytes


def test_float64_inverse_only_on_request():
    h = _hessian(256, 512)
    factor = inverse_cholesky(h, overwrite=True)
    assert factor._inverse is None
    extra, _ = _peak_extra(lambda: inverse_cholesky(h, overwrite=True, inverse=True))
    assert extra <= 3.0 * h.nbytes, extra / h.nbytes


def test_accumulation_needs_no_square_float32_product():
    """Adding rows to a 4096-column sum works in 512-column blocks (not a 64 MiB X^T X)."""
    x = np.random.default_rng(1).normal(size=(64, 4096)).astype(np.float32)
    acc = HessianSum(1, 4096)
    extra, _ = _peak_extra(lambda: acc.add_rows(x))
    assert extra <= 4096 * 512 * 4 * 1.05, extra


def test_solve_layer_peak_over_its_hessian():
    """A SparseGPT layer: the factor, and a few weight-sized arrays; no second Hessian."""
    h = _hessian()
    w = np.random.default_rng(2).normal(size=(1, 256, COLUMNS)).astype(np.float32)
    settings = Settings("prune", "sparsegpt", sparsity=0.5)
    extra, solution = _peak_extra(lambda: solve_layer(w, h, settings, overwrite_hessian=True))
    assert solution.error < solution.baseline_error
    assert extra <= 0.75 * h.nbytes + 8 * w.nbytes, (extra / h.nbytes, extra / w.nbytes)
