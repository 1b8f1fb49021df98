"""SPDY's search: per-layer sensitivity coefficients, each candidate solved exactly and scored for real.

The dynamic programme (:func:`tfcompress.core.budget.solve_budget`) picks the
per-layer options with the least *sum* of per-layer errors under a latency
budget. Errors measured one layer at a time do not add up exactly (pruning two
layers together can hurt more, or less, than the sum), so SPDY (Frantar &
Alistarh, 2022) does not trust their scale: the error of option ``k`` of layer
``l`` is modelled as

    e[l][k] = c_l * p[l][k]

a per-layer sensitivity coefficient ``c_l`` times a per-option prior ``p``.
For a given ``c`` the DP returns the best choice under the budget; the search
looks for the ``c`` whose choice has the lowest *real* loss, measured on the
calibration data with every layer pruned as chosen. Here the prior is each
layer's measured loss-increase curve scaled to a maximum of 1, and the search
starts from the measured scales (so its first candidate is the plain DP's
choice) and runs a seeded randomized local search in ``log c``: each step
perturbs a random subset of the coefficients of the best candidate so far by
Gaussian noise, the subset and the noise shrinking as the search goes on;
a candidate replaces the best only if its real loss is lower. The result is
therefore never worse, on the calibration data, than the plain DP.

Example:
    >>> result = search([[0, 5], [0, 5]], [[1.0, 0.0], [1.0, 0.0]], 5,
    ...                 evaluate=lambda choices: float(sum(choices) == 2), steps=20)
    >>> result.loss <= result.dp_loss
    True

References:
    Frantar, Alistarh. "SPDY: Accurate Pruning with Speedup Guarantees", ICML 2022.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tfcompress.core.budget import solve_budget

__all__ = ["SearchResult", "priors_and_scales", "search"]

_FLOOR = 1e-12  # a coefficient never reaches 0: log space


@dataclasses.dataclass
class SearchResult:
    """What :func:`search` found.

    Attributes:
        choices: The best option per layer.
        loss: Its real loss.
        dp_loss: The real loss of the plain DP's choice (the first candidate).
        dp_choices: The plain DP's choice.
        evaluations: How many distinct candidates were scored (the DP's included).
        steps: How many search steps ran.
        improvements: ``(step, loss)`` each time the best improved.
    """

    choices: list[int]
    loss: float
    dp_loss: float
    dp_choices: list[int]
    evaluations: int
    steps: int
    improvements: list[tuple[int, float]]


def priors_and_scales(errors: Sequence[Sequence[float]]) -> tuple[list[np.ndarray], np.ndarray]:
    """Splits measured errors into priors (each layer's curve, max 1) and scales (its max).

    Negative errors (a loss that went down by chance) count as 0.
    """
    priors, scales = [], []
    for row in errors:
        values = np.maximum(np.asarray(row, np.float64), 0.0)
        top = float(values.max(initial=0.0))
        priors.append(values / top if top > 0 else values)
        scales.append(max(top, _FLOOR))
    return priors, np.asarray(scales)


def search(
    costs: Sequence[Sequence[int]],
    errors: Sequence[Sequence[float]],
    budget: int,
    evaluate: Callable[[list[int]], float],
    *,
    steps: int = 100,
    seed: int = 0,
    progress: Any = None,
) -> SearchResult:
    """Searches per-layer coefficients for the DP choice with the lowest real loss.

    Args:
        costs: ``costs[l][k]``: integer cost of option ``k`` of layer ``l``.
        errors: ``errors[l][k]``: its measured error (one layer pruned at a time).
        budget: The most the chosen options may cost together.
        evaluate: ``choices -> loss``: the real loss with every layer pruned as chosen.
        steps: Search steps after the plain DP's candidate (0: the plain DP only).
        seed: Seed of the mutations.
        progress: A ``keras.utils.Progbar`` advanced per step, or None.

    Returns:
        A :class:`SearchResult`.

    Raises:
        ValueError: If ``steps`` is not an integer >= 0 (and whatever
            :func:`~tfcompress.core.budget.solve_budget` raises for the tables).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    priors, scales = priors_and_scales(errors)
    rng = np.random.default_rng(seed)
    seen: dict[tuple[int, ...], float] = {}

    def solve(log_c: np.ndarray) -> list[int]:
        scaled = [np.exp(c) * p for c, p in zip(log_c, priors)]
        return solve_budget(costs, scaled, budget).choices

    def score(choices: list[int]) -> float:
        key = tuple(choices)
        if key not in seen:
            seen[key] = float(evaluate(list(choices)))
        return seen[key]

    best_log = np.log(scales)
    best = solve(best_log)
    best_loss = dp_loss = score(best)
    dp_choices = list(best)
    improvements: list[tuple[int, float]] = []
    layers = len(scales)
    for step in range(steps):
        left = 1.0 - step / max(1, steps)
        count = max(1, round(layers * 0.5 * left))
        sigma = 0.25 + 1.75 * left
        candidate = best_log.copy()
        which = rng.choice(layers, size=min(count, layers), replace=False)
        candidate[which] += rng.normal(0.0, sigma, size=len(which))
        choices = solve(candidate)
        loss = score(choices)
        if loss < best_loss:
            best_log, best, best_loss = candidate, choices, loss
            improvements.append((step, loss))
        if progress is not None:
            progress.add(1, [("loss", best_loss)])
    return SearchResult(
        choices=list(best),
        loss=best_loss,
        dp_loss=dp_loss,
        dp_choices=dp_choices,
        evaluations=len(seen),
        steps=steps,
        improvements=improvements,
    )
