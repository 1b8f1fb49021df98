"""The shared budget solver: one option per layer, least total error within a total cost."""

import itertools

import numpy as np
import pytest

from tfcompress.core.budget import solve_budget

pytestmark = pytest.mark.jax  # backend-agnostic: also in the JAX subset


def _random_instance(seed, layers=3, options=4):
    rng = np.random.default_rng(seed)
    costs = [sorted(rng.integers(0, 12, size=options).tolist()) for _ in range(layers)]
    # Errors in no particular relation to costs: dominated and non-convex options included.
    errors = [rng.uniform(0, 10, size=options).round(3).tolist() for _ in range(layers)]
    return costs, errors


def _brute_force(costs, errors, budget):
    best = None
    for choice in itertools.product(*[range(len(c)) for c in costs]):
        cost = sum(c[k] for c, k in zip(costs, choice))
        if cost <= budget:
            error = sum(e[k] for e, k in zip(errors, choice))
            best = error if best is None else min(best, error)
    return best


@pytest.mark.parametrize("seed", range(8))
def test_dp_is_exact_and_greedy_is_feasible(seed):
    costs, errors = _random_instance(seed)
    cheapest = sum(min(c) for c in costs)
    for budget in range(cheapest, sum(max(c) for c in costs) + 1, 3):
        exact = solve_budget(costs, errors, budget, method="dp")
        assert exact.exact and exact.cost <= budget
        assert exact.error == pytest.approx(_brute_force(costs, errors, budget))
        assert exact.cost == sum(c[k] for c, k in zip(costs, exact.choices))
        greedy = solve_budget(costs, errors, budget, method="greedy")
        assert not greedy.exact and greedy.cost <= budget
        assert greedy.error >= exact.error - 1e-9


def test_greedy_matches_dp_on_convex_curves_at_a_full_budget():
    # Each layer: error halves per extra unit of cost (convex), budgets used up exactly.
    costs = [[0, 1, 2, 3, 4]] * 3
    errors = [[8.0, 4.0, 2.0, 1.0, 0.5], [6.0, 3.0, 1.5, 0.75, 0.375], [1.0, 0.5, 0.25, 0.1, 0.0]]
    for budget in range(0, 13):
        dp = solve_budget(costs, errors, budget, method="dp")
        greedy = solve_budget(costs, errors, budget, method="greedy")
        assert greedy.error == pytest.approx(dp.error)


def test_auto_uses_the_greedy_when_the_table_is_too_large():
    costs, errors = [[1, 2, 3]] * 2, [[3.0, 2.0, 0.0], [3.0, 1.0, 0.5]]
    assert solve_budget(costs, errors, 4).exact
    small = solve_budget(costs, errors, 4, max_work=5)
    assert not small.exact and small.cost <= 4
    with pytest.raises(ValueError, match=r"method='dp' would need more than max_work=5"):
        solve_budget(costs, errors, 4, method="dp", max_work=5)


def test_start_keeps_the_greedy_at_least_as_good_as_it():
    # Layer 1's cheap steps have the better ratio and use up the budget that layer 0's one
    # expensive but large step needs: from the cheapest options the greedy ends at 50.
    costs = [[10, 20], [1, 2, 3, 4, 5, 6]]
    errors = [[50.0, 0.0], [12.3, 6.3, 0.3, 0.2, 0.1, 0.0]]
    plain = solve_budget(costs, errors, 22, method="greedy")
    assert plain.error == pytest.approx(50.0)
    started = solve_budget(costs, errors, 22, method="greedy", start=[1, 1])
    assert started.error == pytest.approx(6.3) == solve_budget(costs, errors, 22).error


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (([[5, 6], [5]], [[1.0, 0.0], [0.0]], 9), {}, ValueError, r"budget=9 is infeasible.*10"),
        (([[1.5]], [[0.0]], 3), {}, ValueError, "costs must be integers >= 0"),
        (([[-1]], [[0.0]], 3), {}, ValueError, "costs must be integers >= 0"),
        (([[1]], [[np.nan]], 3), {}, ValueError, "errors must be finite"),
        (([[1, 2]], [[0.0]], 3), {}, ValueError, "equal-length"),
        (([[1]], [[0.0], [1.0]], 3), {}, ValueError, "same, non-zero number of layers"),
        (([[1]], [[0.0]], 3.0), {}, TypeError, "budget must be an int"),
        (([[1]], [[0.0]], 3), {"method": "exact"}, ValueError, "method must be"),
        (([[1, 5]], [[1.0, 0.0]], 3), {"method": "greedy", "start": [1]}, ValueError, "over"),
        (([[1, 5]], [[1.0, 0.0]], 3), {"method": "greedy", "start": [2]}, ValueError, "valid"),
    ],
)
def test_bad_input_is_named(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        solve_budget(*args, **kwargs)
