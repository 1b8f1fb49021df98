"""One-shot numerics in NumPy: OBS closed form, N:M patterns, SparseGPT/GPTQ vs baselines, damping."""

import logging

import numpy as np
import pytest

from tfcompress.oneshot.engine import Settings, solve_layer
from tfcompress.oneshot.grid import GridSpec, grid_steps, round_to_grid
from tfcompress.oneshot.hessian import HessianSum, inverse_cholesky
from tfcompress.oneshot.obs import obs_prune, obs_step
from tfcompress.oneshot.solvers import (
    NMPattern,
    column_sweep,
    magnitude_mask,
    relative_error,
    round_to_nearest,
)

# NumPy and Keras layers only: the same on every backend.
pytestmark = pytest.mark.jax


def _correlated(rows=2000, columns=32, seed=0):
    """Inputs whose features are strongly correlated (shared latent factors)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(rows, columns // 4))
    mixing = rng.normal(size=(columns // 4, columns))
    x = latent @ mixing + 0.3 * rng.normal(size=(rows, columns))
    acc = HessianSum(1, columns)
    acc.add_rows(x.astype(np.float32))
    return x, acc.hessian()


def test_hessian_is_two_xxt_over_n_summed_over_batches():
    x = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    acc = HessianSum(1, 6)
    acc.add_rows(x[:20])
    acc.add_rows(x[20:])
    np.testing.assert_allclose(acc.hessian()[0], 2 * x.T @ x / 50, rtol=1e-5)
    assert acc.count == 50


def test_obs_step_is_the_closed_form():
    rng = np.random.default_rng(1)
    _, h = _correlated(200, 8)
    hinv = np.linalg.inv(h[0] + 0.01 * np.eye(8))
    w = rng.normal(size=8)
    q = 3
    new_w, new_hinv = obs_step(w, hinv, q)
    np.testing.assert_allclose(
        new_w, np.where(np.arange(8) == q, 0, w - w[q] / hinv[q, q] * hinv[:, q])
    )
    assert new_w[q] == 0.0
    # The downdate is the inverse Hessian of the remaining weights.
    keep = np.arange(8) != q
    sub = np.linalg.inv((h[0] + 0.01 * np.eye(8))[np.ix_(keep, keep)])
    np.testing.assert_allclose(new_hinv[np.ix_(keep, keep)], sub, rtol=1e-6, atol=1e-10)


def test_obs_prune_picks_the_cheapest_weight_and_applies_the_closed_form():
    rng = np.random.default_rng(2)
    _, h = _correlated(300, 8)
    factor = inverse_cholesky(h, inverse=True)
    w = rng.normal(size=(1, 1, 8)).astype(np.float32)
    new_w, keep = obs_prune(w, factor.inverse, sparsity=1 / 8)
    hinv = factor.inverse[0]
    q = int(np.argmin(w[0, 0].astype(np.float64) ** 2 / np.diag(hinv)))
    expected = w[0, 0] - w[0, 0, q] / hinv[q, q] * hinv[:, q]
    expected[q] = 0
    np.testing.assert_allclose(new_w[0, 0], expected, rtol=1e-5, atol=1e-6)
    assert keep.sum() == 7 and not keep[0, 0, q]


def test_obs_matches_exhaustive_greedy_reference():
    """Two greedy OBS steps, checked against re-solving the reduced least squares."""
    rng = np.random.default_rng(3)
    _x, h = _correlated(400, 6)
    w = rng.normal(size=(1, 1, 6)).astype(np.float32)
    factor = inverse_cholesky(h, inverse=True)
    damped = np.linalg.inv(factor.inverse[0])
    new_w, keep = obs_prune(w, factor.inverse, sparsity=2 / 6)
    kept = keep[0, 0]
    # The kept weights minimise (w - w')^T H (w - w') with the pruned ones at 0.
    target = damped @ w[0, 0].astype(np.float64)
    reference = np.linalg.solve(damped[np.ix_(kept, kept)], target[kept])
    np.testing.assert_allclose(new_w[0, 0][kept], reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pattern", [NMPattern(2, 4), NMPattern(1, 4), NMPattern(3, 8)])
@pytest.mark.parametrize("method", ["sparsegpt", "obs", "magnitude"])
def test_nm_patterns_are_exact(pattern, method):
    rng = np.random.default_rng(4)
    _, h = _correlated(500, 32)
    w = rng.normal(size=(1, 12, 32)).astype(np.float32)
    settings = Settings("prune", method, sparsity=pattern.sparsity, pattern=pattern)
    solution = solve_layer(w, h, settings)
    groups = solution.keep.reshape(1, 12, 32 // pattern.m, pattern.m)
    assert np.all(groups.sum(-1) == pattern.n)
    assert np.all(solution.weights[~solution.keep] == 0)


def test_nm_with_a_shorter_last_group():
    rng = np.random.default_rng(5)
    _, h = _correlated(300, 12)
    h = h[:, :10, :10]
    w = rng.normal(size=(1, 4, 10)).astype(np.float32)
    _q, keep, _ = column_sweep(w, inverse_cholesky(h).chol, pattern=NMPattern(2, 4))
    # groups [0:4], [4:8] keep 2 each; the last group of 2 keeps both
    assert keep[..., :8].reshape(1, 4, 2, 4).sum(-1).tolist() == [[[2, 2]] * 4]
    assert keep[..., 8:].all()
    assert magnitude_mask(w, pattern=NMPattern(2, 4))[..., 8:].all()


def test_unstructured_sparsity_is_exact_per_layer():
    rng = np.random.default_rng(6)
    _, h = _correlated(500, 40)
    w = rng.normal(size=(1, 7, 40)).astype(np.float32)
    for sparsity in (0.3, 0.5, 0.77):
        q, keep, _ = column_sweep(w, inverse_cholesky(h).chol, sparsity=sparsity, block_size=16)
        assert (~keep).sum() == round(sparsity * w.size)
        assert np.all(q[~keep] == 0)


def test_sparsegpt_and_obs_beat_magnitude_on_correlated_inputs():
    rng = np.random.default_rng(7)
    _, h = _correlated(3000, 64)
    w = rng.normal(size=(1, 32, 64)).astype(np.float32)
    errors = {}
    for method in ("magnitude", "sparsegpt", "obs"):
        solution = solve_layer(w, h, Settings("prune", method, sparsity=0.5))
        errors[method] = solution.error
        assert solution.baseline_error == pytest.approx(
            relative_error(w, np.where(magnitude_mask(w, 0.5), w, 0), h)
        )
    assert errors["sparsegpt"] < 0.9 * errors["magnitude"], errors
    assert errors["obs"] < errors["sparsegpt"], errors


def test_gptq_beats_round_to_nearest_and_stays_on_the_grid():
    rng = np.random.default_rng(8)
    _, h = _correlated(3000, 64)
    w = rng.normal(size=(1, 16, 64)).astype(np.float32)
    for per_channel in (True, False):
        spec = GridSpec(4, per_channel)
        solution = solve_layer(w, h, Settings("quantize", "gptq", grid=spec))
        assert solution.error < 0.8 * solution.baseline_error
        rtn, _steps = round_to_nearest(w, spec)
        assert solution.baseline_error == pytest.approx(relative_error(w, rtn, h))
        levels = solution.weights / solution.steps[..., None]
        np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
        assert np.abs(np.round(levels)).max() <= 7
        if not per_channel:
            assert np.unique(solution.steps).size == 1


def test_grid_steps_match_tensorflow_fake_quant():
    import tensorflow as tf

    rng = np.random.default_rng(9)
    w = rng.normal(size=(1, 5, 16)).astype(np.float32)
    spec = GridSpec(4, per_channel=True)
    steps = grid_steps(w, spec)
    ours = round_to_grid(w, steps[..., None], spec.qmax) * steps[..., None]
    high = steps[0] * spec.qmax
    reference = tf.quantization.fake_quant_with_min_max_vars_per_channel(
        w[0].T, -high, high, num_bits=4, narrow_range=True
    ).numpy()
    np.testing.assert_allclose(ours[0], reference.T, rtol=0, atol=1e-6)


def test_group_size_gives_one_step_per_group():
    rng = np.random.default_rng(10)
    _, h = _correlated(1000, 32)
    w = rng.normal(size=(1, 4, 32)).astype(np.float32)
    spec = GridSpec(3, group_size=8)
    q, _, steps = column_sweep(w, inverse_cholesky(h).chol, grid=spec, block_size=12)
    assert steps.shape == (1, 4, 4)
    for g in range(4):
        part = q[..., g * 8 : (g + 1) * 8] / steps[..., g : g + 1]
        np.testing.assert_allclose(part, np.round(part), atol=1e-4)
        assert np.abs(np.round(part)).max() <= 3


def test_joint_pruning_and_quantization():
    rng = np.random.default_rng(11)
    _, h = _correlated(2000, 32)
    w = rng.normal(size=(1, 8, 32)).astype(np.float32)
    settings = Settings("compress", "sparsegpt", sparsity=0.5, grid=GridSpec(4))
    solution = solve_layer(w, h, settings)
    assert (~solution.keep).sum() == w.size // 2
    assert np.all(solution.weights[~solution.keep] == 0)
    assert solution.error < solution.baseline_error


def test_damping_escalates_with_a_logged_message(caplog):
    h = np.diag([1.0, 1.0, -0.2])[None]  # indefinite: Cholesky fails until damped enough
    with caplog.at_level(logging.WARNING, logger="tfcompress.oneshot"):
        factor = inverse_cholesky(h, 0.01, name="bad")
    assert factor.damping == pytest.approx(1.0) and factor.tries == 3
    assert "retrying with 0.1" in caplog.text and "'bad'" in caplog.text
    np.testing.assert_allclose(factor.chol[0].T @ factor.chol[0], factor.inverse[0], rtol=1e-5)


def test_non_finite_hessian_is_refused():
    with pytest.raises(ValueError, match="NaN/Inf"):
        inverse_cholesky(np.full((1, 2, 2), np.nan))


def _spd(columns, rng, condition=None, rank=None):
    """A random symmetric PSD matrix: eigenvalues spread over ``condition``, or of rank ``rank``."""
    if condition is not None:
        q, _ = np.linalg.qr(rng.normal(size=(columns, columns)))
        h = (q * np.logspace(0, -np.log10(condition), columns)) @ q.T
    else:
        x = rng.normal(size=(rank or 2 * columns, columns))
        h = x.T @ x / len(x)
    return (h + h.T) / 2


def _reference_factor(h, damping):
    """The formula the blocked factorisation replaces: chol((H + d I)^-1)^T."""
    damped = h + damping * np.mean(np.diag(h)) * np.eye(len(h))
    return np.linalg.cholesky(np.linalg.inv(damped)).T


@pytest.mark.parametrize(
    ("columns", "kind"),
    [(6, {}), (128, {}), (129, {}), (300, {"rank": 40}), (517, {"condition": 1e10})],
)
@pytest.mark.parametrize("damping", [0.01, 1e-4])
def test_factor_is_the_upper_cholesky_factor_of_the_inverse(columns, kind, damping):
    """Factoring H = V V^T (V upper) and inverting V gives chol((H + d I)^-1)^T, unchanged."""
    h = _spd(columns, np.random.default_rng(columns), **kind)
    expected = _reference_factor(h, damping)
    for overwrite in (False, True):
        work = h[None].copy()
        factor = inverse_cholesky(work, damping, inverse=True, overwrite=overwrite)
        chol = factor.chol[0].astype(np.float64)
        assert factor.chol.dtype == np.float32
        assert np.all(np.tril(chol, -1) == 0) and np.all(np.diag(chol) > 0)
        assert np.linalg.norm(chol - expected) <= 1e-6 * np.linalg.norm(expected)
        inverse = np.linalg.inv(h + damping * np.mean(np.diag(h)) * np.eye(columns))
        np.testing.assert_allclose(factor.inverse[0], inverse, rtol=1e-8, atol=1e-8 * inverse.max())
        np.testing.assert_array_equal(work[0], h)  # restored exactly (symmetric input)


def test_grouped_problems_share_the_escalated_damping(caplog):
    rng = np.random.default_rng(5)
    good = _spd(200, rng)
    bad = np.diag(np.r_[np.ones(199), -0.2])  # needs dampening 1
    stack = np.stack([good, bad, good])
    with caplog.at_level(logging.WARNING, logger="tfcompress.oneshot"):
        factor = inverse_cholesky(stack.copy(), 0.01, overwrite=True)
    assert factor.damping == pytest.approx(1.0) and factor.tries == 3
    for group in range(3):
        expected = _reference_factor(stack[group], 1.0)
        np.testing.assert_allclose(factor.chol[group], expected, rtol=1e-5, atol=1e-6)


def test_failed_factorisation_restores_an_overwritten_hessian():
    h = np.diag([1.0, 1.0, -1e4])[None]
    work = h.copy()
    with pytest.raises(ValueError, match="not positive definite"):
        inverse_cholesky(work, overwrite=True)
    np.testing.assert_array_equal(work, h)


def test_blocked_accumulation_is_symmetric_and_equals_xtx():
    x = np.random.default_rng(6).normal(size=(300, 1100)).astype(np.float32)
    acc = HessianSum(1, 1100)
    acc.add_rows(x[:100])
    acc.add_rows(x[100:])
    total = acc.total[0]
    np.testing.assert_array_equal(total, total.T)
    expected = x.astype(np.float64).T @ x.astype(np.float64)
    np.testing.assert_allclose(total, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    grouped = HessianSum(2, 1100)
    grouped.add_grouped(np.stack([x, 2 * x]))
    np.testing.assert_array_equal(grouped.total[1], 4 * grouped.total[0])  # x 2: exact
    np.testing.assert_allclose(grouped.total[0], total, rtol=1e-5, atol=1e-5 * np.abs(total).max())


def test_take_hessian_scales_in_place_and_hands_the_sum_over():
    x = np.random.default_rng(7).normal(size=(40, 8)).astype(np.float32)
    acc = HessianSum(1, 8)
    acc.add_rows(x)
    expected = acc.hessian()
    total = acc.total
    taken = acc.take_hessian()
    assert taken is total and acc.total is None and acc.count == 40 and acc.nbytes == 8 * 8 * 8
    np.testing.assert_array_equal(taken, expected)
    with pytest.raises(ValueError, match="take_hessian"):
        acc.add_rows(x)


def test_solve_layer_overwriting_the_hessian_gives_the_same_solution():
    rng = np.random.default_rng(12)
    _, h = _correlated(2000, 300)
    w = rng.normal(size=(1, 16, 300)).astype(np.float32)
    settings = Settings("prune", "sparsegpt", sparsity=0.5)
    plain = solve_layer(w, h, settings)
    work = h.copy()
    lean = solve_layer(w, work, settings, overwrite_hessian=True)
    np.testing.assert_array_equal(work, h)
    np.testing.assert_array_equal(lean.weights, plain.weights)
    assert lean.error == plain.error and lean.baseline_error == plain.baseline_error
    reference = relative_error(w, plain.weights, h)
    assert plain.error == pytest.approx(reference, rel=1e-10)
