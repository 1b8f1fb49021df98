"""Choosing one option per layer under a total budget (multiple-choice knapsack).

Every budgeted technique asks the same question: each layer ``l`` offers
options ``k`` (a rank, a bit width, a sparsity) with a cost ``c[l][k]``
(parameters, bits, bytes) and an error ``e[l][k]``; pick one option per layer
so that::

    minimise  sum_l e[l][k_l]   subject to   sum_l c[l][k_l] <= budget

This is the multiple-choice knapsack problem (Sinha & Zoltners, 1979). With
integer costs it is solved exactly by dynamic programming over the budget, in
units of the greatest common divisor of the costs, in
``O(budget / gcd * number of options)`` time. When that table is too large,
a greedy solution is used instead: from a feasible start, repeatedly take the
upgrade (a costlier option of one layer) with the largest error reduction per
unit of extra cost that still fits. The greedy is exact when every layer's
options lie on a convex error-cost curve and the budget is used up exactly;
otherwise it is a good, fast approximation (Pisinger, 1995).

Errors must be additive across layers (squared errors, loss increases
measured one layer at a time); the solver does not check that.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["DEFAULT_MAX_WORK", "Allocation", "solve_budget"]

#: Above this many table cell updates (cells x options) "auto" uses the greedy.
DEFAULT_MAX_WORK = 30_000_000


@dataclasses.dataclass(frozen=True)
class Allocation:
    """A choice of one option per layer.

    Attributes:
        choices: The index of the chosen option in each layer.
        cost: Their total cost (``<= budget``).
        error: Their total error.
        exact: ``True`` when the dynamic programme found it (it is optimal),
            ``False`` for the greedy.
    """

    choices: list[int]
    cost: int
    error: float
    exact: bool


def _check(
    costs: Sequence[Sequence[int]], errors: Sequence[Sequence[float]], budget: int
) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget must be an int, got {budget!r}")
    if len(costs) != len(errors) or not len(costs):
        raise ValueError(
            f"costs and errors must list the same, non-zero number of layers, got {len(costs)} "
            f"and {len(errors)}"
        )
    cost_arrays, error_arrays = [], []
    for layer, (cost, error) in enumerate(zip(costs, errors)):
        c = np.asarray(cost)
        e = np.asarray(error, dtype=np.float64)
        if c.ndim != 1 or e.shape != c.shape or not c.size:
            raise ValueError(
                f"layer {layer}: costs and errors must be equal-length non-empty lists, got "
                f"shapes {c.shape} and {e.shape}"
            )
        if not np.issubdtype(c.dtype, np.integer) or np.any(c < 0):
            raise ValueError(f"layer {layer}: costs must be integers >= 0, got {list(cost)}")
        if not np.all(np.isfinite(e)):
            raise ValueError(f"layer {layer}: errors must be finite, got {list(error)}")
        cost_arrays.append(c.astype(np.int64))
        error_arrays.append(e)
    cheapest = sum(int(c.min()) for c in cost_arrays)
    if budget < cheapest:
        raise ValueError(
            f"budget={budget} is infeasible: the cheapest option of every layer already "
            f"costs {cheapest}"
        )
    return cost_arrays, error_arrays, int(budget)


def _dynamic_programming(
    costs: list[np.ndarray], errors: list[np.ndarray], budget: int, max_work: int
) -> list[int] | None:
    """Exact choices, or ``None`` when the table would exceed ``max_work`` updates."""
    unit = math.gcd(*(int(c) for cost in costs for c in cost)) or 1
    cells = budget // unit + 1
    if cells * sum(len(c) for c in costs) > max_work:
        return None
    # best[b] = the least total error of the layers so far using at most b units.
    best = np.zeros(cells)
    picks = np.zeros((len(costs), cells), dtype=np.int32)
    for layer, (cost, error) in enumerate(zip(costs, errors)):
        new = np.full(cells, np.inf)
        for option, (c, e) in enumerate(zip(cost // unit, error)):
            if c >= cells:
                continue
            candidate = np.full(cells, np.inf)
            candidate[c:] = best[: cells - c] + e
            better = candidate < new  # strict: on ties the earlier option stays
            new[better] = candidate[better]
            picks[layer, better] = option
        best = new
    choices = [0] * len(costs)
    b = cells - 1
    for layer in range(len(costs) - 1, -1, -1):
        choices[layer] = int(picks[layer, b])
        b -= int(costs[layer][choices[layer]] // unit)
    return choices


def _greedy(
    costs: list[np.ndarray], errors: list[np.ndarray], budget: int, start: list[int]
) -> list[int]:
    """Best error reduction per unit of extra cost first, from ``start``."""
    choices = list(start)
    spent = sum(int(c[k]) for c, k in zip(costs, choices))

    def best_upgrade(layer: int) -> tuple[float, int] | None:
        cost, error = costs[layer], errors[layer]
        here = choices[layer]
        extra = cost - cost[here]
        gain = error[here] - error
        fits = (gain > 0) & (extra <= budget - spent)
        if not fits.any():
            return None
        # Free improvements first; then the largest gain per unit of extra cost.
        ratio = np.where(extra > 0, gain / np.maximum(extra, 1), np.inf)
        ratio = np.where(fits, ratio, -np.inf)
        option = int(np.argmax(ratio))
        return float(ratio[option]), option

    heap: list[tuple[float, int, int, int]] = []  # (-ratio, layer, option, version)
    versions = [0] * len(costs)
    for layer in range(len(costs)):
        found = best_upgrade(layer)
        if found is not None:
            heapq.heappush(heap, (-found[0], layer, found[1], 0))
    while heap:
        _, layer, option, version = heapq.heappop(heap)
        if version != versions[layer]:
            continue
        extra = int(costs[layer][option] - costs[layer][choices[layer]])
        if extra > budget - spent:  # the budget shrank since this was pushed
            versions[layer] += 1
            found = best_upgrade(layer)
            if found is not None:
                heapq.heappush(heap, (-found[0], layer, found[1], versions[layer]))
            continue
        spent += extra
        choices[layer] = option
        versions[layer] += 1
        found = best_upgrade(layer)
        if found is not None:
            heapq.heappush(heap, (-found[0], layer, found[1], versions[layer]))
    return choices


def solve_budget(
    costs: Sequence[Sequence[int]],
    errors: Sequence[Sequence[float]],
    budget: int,
    *,
    method: str = "auto",
    start: Sequence[int] | None = None,
    max_work: int = DEFAULT_MAX_WORK,
) -> Allocation:
    """Chooses one option per layer minimising the total error within ``budget``.

    Args:
        costs: ``costs[l][k]``: the integer cost of option ``k`` of layer ``l``.
        errors: ``errors[l][k]``: its error (finite; lower is better).
        budget: The most the chosen options may cost together.
        method: ``"dp"`` (exact; an error if the table would exceed
            ``max_work``), ``"greedy"``, or ``"auto"`` (exact when the table
            fits, else greedy).
        start: Feasible starting choices for the greedy (default: the
            cheapest option of every layer). A start that is already good,
            e.g. the best uniform setting, keeps the greedy from being worse
            than it.
        max_work: Largest dynamic-programming table, in cell updates.

    Returns:
        An :class:`Allocation`.

    Raises:
        TypeError: If ``budget`` is not an int.
        ValueError: For an unknown ``method``, ragged or empty options,
            negative or non-integer costs, non-finite errors, a ``start`` that
            is out of range or over budget, an infeasible budget (below the
            sum of the cheapest options), or ``method="dp"`` on a table larger
            than ``max_work``.

    Example:
        >>> solve_budget([[1, 2, 3], [1, 2]], [[9.0, 4.0, 3.0], [5.0, 0.0]], 4).choices
        [1, 1]
    """
    if method not in ("auto", "dp", "greedy"):
        raise ValueError(f"method must be 'auto', 'dp' or 'greedy', got {method!r}")
    cost_arrays, error_arrays, budget = _check(costs, errors, budget)
    choices = None
    if method in ("auto", "dp"):
        choices = _dynamic_programming(cost_arrays, error_arrays, budget, max_work)
        if choices is None and method == "dp":
            raise ValueError(
                f"method='dp' would need more than max_work={max_work:,} table updates for "
                f"budget={budget}; use method='greedy' or 'auto'"
            )
    exact = choices is not None
    if choices is None:
        if start is None:
            first = [
                int(np.lexsort((e, c))[0]) for c, e in zip(cost_arrays, error_arrays)
            ]  # cheapest, then lowest error
        else:
            first = [int(k) for k in start]
            if len(first) != len(cost_arrays) or any(
                not 0 <= k < len(c) for k, c in zip(first, cost_arrays)
            ):
                raise ValueError(f"start={list(start)} must give one valid option per layer")
            used = sum(int(c[k]) for c, k in zip(cost_arrays, first))
            if used > budget:
                raise ValueError(f"start={list(start)} costs {used}, over budget={budget}")
        choices = _greedy(cost_arrays, error_arrays, budget, first)
    return Allocation(
        choices=choices,
        cost=sum(int(c[k]) for c, k in zip(cost_arrays, choices)),
        error=float(sum(e[k] for e, k in zip(error_arrays, choices))),
        exact=exact,
    )
