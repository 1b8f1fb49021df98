"""NumPy core of low-rank factorization: SVD truncation, energy rank, global rank allocation."""

import itertools

import numpy as np
import pytest

from tfcompress.core.budget import solve_budget
from tfcompress.lowrank import decompositions as lr
from tfcompress.lowrank.conv_decompositions import conv_decomposition


def _matrix_of_rank(rows, cols, rank, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, rank)) @ rng.standard_normal((rank, cols))


def test_truncated_svd_reproduces_true_rank_matrix():
    w = _matrix_of_rank(40, 30, 5)
    a, b = lr.truncated_svd(w, 5)
    assert a.shape == (40, 5) and b.shape == (5, 30)
    np.testing.assert_allclose(a @ b, w, atol=1e-4 * np.abs(w).max())


@pytest.mark.parametrize("rank", [1, 3, 10, 19])
def test_truncated_svd_error_is_the_svd_tail(rank):
    w = np.random.default_rng(1).standard_normal((20, 25))
    s = np.linalg.svd(w, compute_uv=False)
    a, b = lr.truncated_svd(w, rank)
    error = np.sum((w - a.astype(np.float64) @ b) ** 2)
    np.testing.assert_allclose(error, np.sum(s[rank:] ** 2), rtol=1e-4)
    assert lr.svd_tail_error(s, rank) == pytest.approx(np.sum(s[rank:] ** 2))


def test_truncated_svd_balances_factor_scales():
    a, b = lr.truncated_svd(np.random.default_rng(2).standard_normal((30, 20)), 4)
    np.testing.assert_allclose(np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=1), rtol=1e-5)


@pytest.mark.parametrize("rank", [0, -1])
def test_rank_below_one_is_refused(rank):
    with pytest.raises(ValueError, match=r"rank must be >= 1, got"):
        lr.truncated_svd(np.ones((4, 3)), rank)


@pytest.mark.parametrize("rank", [3, 7])
def test_rank_at_least_min_dimension_is_refused(rank):
    with pytest.raises(ValueError, match=r"rank=\d+ must be < min\(in, out\) = min\(4, 3\) = 3"):
        lr.truncated_svd(np.ones((4, 3)), rank)


def test_energy_rank():
    s = np.array([3.0, 2.0, 1.0, 0.5])  # energies 9, 4, 1, 0.25 of 14.25
    assert lr.energy_rank(s, 9 / 14.25) == 1
    assert lr.energy_rank(s, 9 / 14.25 + 1e-6) == 2
    assert lr.energy_rank(s, 0.95) == 3
    assert lr.energy_rank(s, 1.0) == 4


@pytest.mark.parametrize("energy", [0.0, -0.5, 1.0001, 2])
def test_energy_outside_unit_interval_is_refused(energy):
    with pytest.raises(ValueError, match=r"energy must be in \(0, 1\]"):
        lr.energy_rank(np.ones(3), energy)


def test_max_useful_rank():
    # r * (m + n) < m * n
    for rows, cols in [(512, 128), (9, 32), (1024, 1024), (2, 2), (1, 5)]:
        r = lr.max_useful_rank(rows, cols)
        assert r * (rows + cols) < rows * cols or r == 0
        assert (r + 1) * (rows + cols) >= rows * cols
    assert lr.max_useful_rank(1024, 1024) == 511


def _random_spectra(seed, layers=4):
    rng = np.random.default_rng(seed)
    shapes = [tuple(rng.integers(6, 40, size=2)) for _ in range(layers)]
    spectra = []
    for rows, cols in shapes:
        # Different decay and scale per layer, so the allocation matters.
        decay = rng.uniform(0.02, 0.5)
        n = min(rows, cols)
        spectra.append(rng.uniform(0.5, 5) * np.exp(-decay * np.arange(n)))
    costs = [rows + cols for rows, cols in shapes]
    tops = [lr.max_useful_rank(rows, cols) for rows, cols in shapes]
    return spectra, costs, tops


@pytest.mark.parametrize("method", ["dp", "greedy", "auto"])
@pytest.mark.parametrize("seed", range(6))
def test_global_budget_beats_uniform_rank_at_equal_parameters(seed, method):
    spectra, costs, tops = _random_spectra(seed)
    for rank in range(1, max(tops) + 1):
        uniform = lr.uniform_ranks(tops, rank)
        budget = sum(r * c for r, c in zip(uniform, costs))
        ranks = lr.allocate_ranks(spectra, costs, budget, tops, method=method)
        assert sum(r * c for r, c in zip(ranks, costs)) <= budget
        assert all(1 <= r <= t for r, t in zip(ranks, tops))
        assert lr.total_tail_error(spectra, ranks) <= lr.total_tail_error(spectra, uniform) + 1e-12


def test_global_budget_is_strictly_better_on_unequal_layers():
    # One layer with a flat spectrum, one with a fast-decaying one: uniform
    # rank wastes parameters on the second.
    spectra = [np.ones(20), 10.0 * 0.3 ** np.arange(20)]
    costs, tops = [40, 40], [9, 9]
    uniform = [5, 5]
    ranks = lr.allocate_ranks(spectra, costs, 400, tops)
    # uniform: 15 + 0.0006; best: rank 8 and 2, 12 + 0.89.
    assert ranks == [8, 2]
    assert lr.total_tail_error(spectra, ranks) == pytest.approx(12 + 0.81 / (1 - 0.09))
    assert lr.total_tail_error(spectra, ranks) < lr.total_tail_error(spectra, uniform) - 2


@pytest.mark.parametrize("seed", range(4))
def test_dp_is_exact_against_brute_force(seed):
    spectra, costs, tops = _random_spectra(seed, layers=3)
    tops = [min(t, 6) for t in tops]
    budget = int(0.6 * sum(c * t for c, t in zip(costs, tops)))
    best = min(
        (
            lr.total_tail_error(spectra, ranks)
            for ranks in itertools.product(*[range(1, t + 1) for t in tops])
            if sum(r * c for r, c in zip(ranks, costs)) <= budget
        ),
    )
    dp = lr.allocate_ranks(spectra, costs, budget, tops, method="dp")
    greedy = lr.allocate_ranks(spectra, costs, budget, tops, method="greedy")
    assert lr.total_tail_error(spectra, dp) == pytest.approx(best)
    assert lr.total_tail_error(spectra, greedy) >= best - 1e-12


def test_greedy_never_loses_to_uniform_even_when_ratio_order_misleads():
    # Layer 1's cheap steps have the better ratio and use up the budget that
    # layer 0's one expensive but large step needs: a greedy from rank 1 alone
    # ends at error 50, uniform rank 2 at 6.3. Starting from uniform rescues it.
    spectra = [np.sqrt([100.0, 50.0]), np.sqrt([50.0, 6.0, 6.0, 0.1, 0.1, 0.1])]
    costs, tops, budget = [10, 1], [2, 6], 22
    options = [[r * c for r in range(1, t + 1)] for c, t in zip(costs, tops)]
    errors = [[lr.svd_tail_error(s, r) for r in range(1, t + 1)] for s, t in zip(spectra, tops)]
    from_ones = solve_budget(options, errors, budget, method="greedy")
    assert from_ones.error == pytest.approx(50.0)
    ranks = lr.allocate_ranks(spectra, costs, budget, tops, method="greedy")
    assert lr.total_tail_error(spectra, ranks) <= lr.total_tail_error(spectra, [2, 2])
    assert lr.total_tail_error(spectra, ranks) == pytest.approx(6.3)
    dp = lr.allocate_ranks(spectra, costs, budget, tops, method="dp")
    assert lr.total_tail_error(spectra, dp) == pytest.approx(6.3)


def test_allocation_errors():
    with pytest.raises(ValueError, match="budget=5 parameters is below the 20"):
        lr.allocate_ranks([np.ones(3), np.ones(3)], [10, 10], 5)
    with pytest.raises(ValueError, match="method must be"):
        lr.allocate_ranks([np.ones(3)], [10], 50, method="exact")


@pytest.mark.parametrize("decomposition", ["channel", "spatial"])
def test_conv_factors_compose_back_to_the_kernel(decomposition):
    rng = np.random.default_rng(3)
    kernel = rng.standard_normal((3, 3, 4, 6))
    scheme = conv_decomposition(decomposition)
    matrix = scheme.matrix(kernel)
    rank = min(matrix.shape) - 1
    factors = scheme.factors(kernel, rank)
    assert [f.shape for f in factors] == [s[1] for s in scheme.stages(kernel.shape, rank)]
    assert scheme.params(kernel.shape, rank) == lr.factor_params(*matrix.shape, rank)
    composed = scheme.compose(factors)
    s = np.linalg.svd(matrix, compute_uv=False)
    np.testing.assert_allclose(np.sum((kernel - composed) ** 2), s[-1] ** 2, rtol=1e-3)


def test_tucker2_object_composes_its_factors_and_counts_them():
    kernel = np.random.default_rng(5).standard_normal((3, 3, 5, 7))
    scheme = conv_decomposition("tucker2")
    assert not scheme.svd_based and scheme.normalize_rank([2, 3]) == (2, 3)
    factors = scheme.factors(kernel, (5, 7))
    np.testing.assert_allclose(scheme.compose(factors), kernel, atol=1e-10)
    assert [f.shape for f in factors] == [s[1] for s in scheme.stages(kernel.shape, (5, 7))]
    assert scheme.params(kernel.shape, (2, 3)) == 2 * 5 + 9 * 2 * 3 + 3 * 7
    assert scheme.choose_rank(kernel, 9, None) == (5, 7)  # clipped to each mode
    with pytest.raises(ValueError, match="decomposition must be one of"):
        conv_decomposition("bogus")


def test_tucker2_at_full_rank_is_exact_and_hooi_does_not_hurt():
    kernel = np.random.default_rng(4).standard_normal((3, 3, 5, 7))
    u_in, core, u_out = lr.tucker2(kernel, 5, 7)
    np.testing.assert_allclose(np.einsum("cr,hwrs,fs->hwcf", u_in, core, u_out), kernel, atol=1e-10)

    def error(sweeps):
        u_in, core, u_out = lr.tucker2(kernel, 3, 4, sweeps=sweeps)
        return np.sum((kernel - np.einsum("cr,hwrs,fs->hwcf", u_in, core, u_out)) ** 2)

    assert error(5) <= error(0) + 1e-9
