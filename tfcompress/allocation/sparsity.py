"""``sparsity``: per-layer channel fractions that meet a measured latency target (SPDY).

Given a trained model, calibration data and a target latency (a fraction of the
dense model's float32 LiteRT latency, one thread, batch 1), choose for every
layer whose output channels ``shrink_model`` can remove how many of them to
prune, so that the shrunk model meets the target and loses as little as
possible on the calibration data. Three steps, after Frantar & Alistarh (2022):

1. **Latency tables, measured**: for each layer and each candidate fraction,
   the latency of that layer's segment with that many channels, and what its
   consumers save on their inputs
   (:mod:`~tfcompress.allocation.channel_costs`), cached per machine
   (:mod:`~tfcompress.allocation.latency`).
2. **Errors, measured**: the calibration loss increase when only that layer
   is pruned at that fraction (lowest-L1 filters, the channels
   ``shrink_model`` removes). Without targets the error is the relative
   squared change of the outputs, ``||f_pruned(x) - f(x)||^2 / ||f(x)||^2``
   (logits for a classifier; :mod:`~tfcompress.allocation.sensitivity`'s
   ``"output"`` error, as ``tfc.allocate.bits`` uses); with ``(x, y)`` and
   ``loss=`` it is the increase of that loss.
3. **Solve, then search**: the multiple-choice knapsack
   (:func:`~tfcompress.core.budget.solve_budget`) gives the least total error
   within the budget; SPDY's search (:mod:`~tfcompress.allocation.spdy`) then
   rescales per-layer sensitivities and keeps the DP choice whose *real*
   calibration loss, all layers pruned together, is lowest.

Latencies are coupled (a layer's outputs are the next layer's inputs), so the
chosen model is shrunk and timed for real; while it misses the target by more
than ``tolerance``, another round follows (up to ``max_rounds``): the tables
are measured again around the first choice and the budget is rescaled by
measured/predicted (then interpolated between the rounds that bracket the
target). The plan records every round's predicted and measured latency.

Example:
    >>> plan = tfc.allocate.sparsity(model, x_train[:512], target_latency=0.5)
    >>> print(plan)                  # per layer: fraction, predicted ms, loss increase
    >>> small = plan.apply(model)    # one-shot: pruned and shrunk
    >>> model.fit(x, y, callbacks=plan.to_pruning(end_step=300, frequency=50))

References:
    Frantar, Alistarh. "SPDY: Accurate Pruning with Speedup Guarantees", ICML 2022.
    Li et al. "Pruning Filters for Efficient ConvNets", ICLR 2017 (L1 filter norm).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from tfcompress.allocation.channel_costs import ChannelGraph, LatencyTables, latency_tables
from tfcompress.allocation.channel_plan import ChannelPruner, SparsityPlan
from tfcompress.allocation.latency import LatencyCache, LiteRTTimer, Timer, machine_key
from tfcompress.allocation.plan import LayerChoice
from tfcompress.allocation.sensitivity import ModelScorer
from tfcompress.allocation.spdy import search
from tfcompress.core.budget import solve_budget
from tfcompress.core.calibration import calibration_data as check_calibration
from tfcompress.pruning.channels import channel_prunable_layers
from tfcompress.pruning.shrink import shrink_model

__all__ = ["DEFAULT_FRACTIONS", "STRUCTURES", "SparsityPlan", "latency_ratio", "sparsity"]

DEFAULT_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
STRUCTURES = ("channel",)
_RESOLUTION = 10_000  # knapsack cost units per dense latency
_BATCH = 256


def latency_ratio(
    model: keras.Model, small: keras.Model, timer: Timer | None = None
) -> tuple[float, float, float]:
    """``(small / model, model seconds, small seconds)``, the two timed together, interleaved.

    Example:
        >>> ratio, dense_s, small_s = latency_ratio(model, plan.apply(model))
    """
    timer = timer if timer is not None else LiteRTTimer(rounds=15)
    dense, fast = (float(s) for s in timer([model, small]))
    return (fast / dense if dense > 0 else math.nan), dense, fast


def _scorer(
    model: keras.Model, data: Any, loss: Any, max_samples: int, recalibrate: bool
) -> ModelScorer:
    """The calibration scorer: ``(x, y)`` with ``loss=`` (loss increase), else inputs (output error)."""
    targets = None
    if loss is not None:
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise ValueError(
                f"calibration_data must be a pair (x, y) when loss= is given, got "
                f"{type(data).__name__}; without loss= give inputs only (scored by the "
                "relative squared change of the model's outputs)"
            )
        data, targets = data
        loss = keras.losses.get(loss)
    calibration = check_calibration(data, model, max_samples=max_samples)
    if targets is not None:
        targets = np.asarray(targets)[: calibration.num_samples]
        if len(targets) != calibration.num_samples:
            raise ValueError(
                f"calibration_data: x has {calibration.num_samples} examples, y {len(targets)}"
            )
    return ModelScorer(model, calibration, targets, loss, _BATCH, recalibrate)


def _check(
    model,
    target_latency,
    structure,
    fractions,
    search_steps,
    tolerance,
    max_rounds,
    num_threads,
    max_samples,
) -> tuple[float, tuple[float, ...]]:
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(f"model must be a built keras.Model, got {model!r}")
    for spec in keras.tree.flatten(getattr(model, "inputs", None) or []):
        if any(d is None for d in tuple(spec.shape)[1:]):
            raise ValueError(
                f"model {model.name!r} has an input of shape {tuple(spec.shape)}: latency is "
                "measured at one input size, so every dimension but the batch must be fixed "
                "(build it with keras.Input(shape=(H, W, C)))"
            )
    for layer in model.layers:
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise ValueError(
                f"layer {layer.name!r} uses data_format={layer.data_format!r}; channel "
                "allocation (and shrink_model) supports channels_last only"
            )
    if structure not in STRUCTURES:
        raise ValueError(
            f"structure must be one of {STRUCTURES}, got {structure!r}; 'unstructured' and "
            "N:M latency tables are not implemented (XNNPACK speeds up sparse weights only "
            "for float 1x1 convolutions with >= 2/3 zeros)"
        )
    if isinstance(target_latency, bool) or not isinstance(target_latency, (int, float)):
        raise ValueError(f"target_latency must be a number in (0, 1], got {target_latency!r}")
    target = float(target_latency)
    if not 0 < target <= 1:
        raise ValueError(
            f"target_latency={target_latency!r} must be in (0, 1]: a fraction of the dense "
            "model's latency (1 keeps the model dense; more than 1 asks for a slower model)"
        )
    try:
        values = tuple(sorted({float(f) for f in fractions}))
    except (TypeError, ValueError):
        raise ValueError(f"fractions must be numbers in [0, 1), got {fractions!r}") from None
    if not values:
        raise ValueError(
            f"fractions={fractions!r} is empty: give the candidate channel fractions, e.g. "
            f"{DEFAULT_FRACTIONS}"
        )
    if values[0] < 0 or values[-1] >= 1:
        raise ValueError(f"fractions must lie in [0, 1), got {fractions!r}")
    for name, value, least in (
        ("search_steps", search_steps, 0),
        ("max_rounds", max_rounds, 1),
        ("num_threads", num_threads, 1),
        ("max_samples", max_samples, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance <= 0:
        raise ValueError(
            f"tolerance must be a positive fraction of the dense latency, got {tolerance!r}"
        )
    return target, values


def _discretise(tables: LatencyTables, target: float) -> tuple[list[list[int]], int, float]:
    """Integer costs, the integer budget (< 0: unreachable) and the least reachable fraction."""
    unit = tables.dense / _RESOLUTION
    lows = [min(row) for row in tables.seconds]
    costs = [[round((s - low) / unit) for s in row] for row, low in zip(tables.seconds, lows)]
    smallest = (tables.fixed + sum(lows)) / tables.dense
    room = (target * tables.dense - tables.fixed - sum(lows)) / unit
    # Each cost is rounded to the nearest unit: allow half a unit per layer.
    budget = math.floor(room + 0.5 * len(costs)) if room >= 0 else -1
    return costs, budget, smallest


@dataclasses.dataclass
class _Round:
    number: int
    choices: list[int]
    tables: LatencyTables
    costs: list[list[int]]
    budget: int
    fraction: float  # the budget as a fraction of the dense latency
    predicted: float
    measured: float

    def record(self, stage: str, choices: list[int] | None = None, measured: float = 0.0):
        picked = self.choices if choices is None else choices
        return {
            "stage": stage,
            "round": self.number,
            "budget": self.fraction,
            "predicted": self.tables.predict(picked) / self.tables.dense,
            "measured": self.measured if choices is None else measured,
        }


def _next_budget(points: list[tuple[float, float]], target: float) -> float:
    """The next budget from ``(budget, measured)`` pairs on the same tables.

    Interpolates between the closest pair that brackets the target, else
    rescales the last budget by target / measured.
    """
    below = [p for p in points if p[1] <= target]
    above = [p for p in points if p[1] > target]
    if below and above:
        (b0, m0), (b1, m1) = max(below, key=lambda p: p[1]), min(above, key=lambda p: p[1])
        if m1 > m0:
            return b0 + (target - m0) * (b1 - b0) / (m1 - m0)
    budget, measured = points[-1]
    return budget * target / measured if measured > 0 else budget


def _layer_errors(
    scorer: ModelScorer, pruner: ChannelPruner, options: dict[str, list[int]], progress: Any
) -> list[list[float]]:
    """Per layer and option (channels pruned), the error with only that layer pruned."""
    errors = []
    for name, pruned in options.items():
        row = []
        for count in pruned:
            row.append(scorer.increase(pruner.set({name: count})) if count else 0.0)
            if progress is not None:
                progress.add(1)
        errors.append(row)
    return errors


def _best_round(solved: list[_Round], target: float, tolerance: float) -> _Round:
    """The round within tolerance of the target (or under it) with the most latency to spare
    for accuracy; if none, the fastest."""
    meeting = [r for r in solved if r.measured <= target + tolerance]
    if meeting:
        return max(meeting, key=lambda r: r.measured)
    return min(solved, key=lambda r: r.measured)


def sparsity(
    model: keras.Model,
    calibration_data: Any,
    target_latency: float = 0.5,
    structure: str = "channel",
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    loss: Any = None,
    search_steps: int = 100,
    seed: int = 0,
    tolerance: float = 0.05,
    max_rounds: int = 4,
    max_samples: int = 512,
    recalibrate_batchnorm: bool = True,
    num_threads: int = 1,
    timer: Timer | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    errors_from: SparsityPlan | None = None,
    verbose: int = 1,
) -> SparsityPlan:
    """Chooses per-layer channel fractions for a measured LiteRT latency target (SPDY).

    Args:
        model: A trained, built Sequential/Functional model (channels last).
        calibration_data: Typical inputs (any form
            :func:`tfcompress.core.calibration.calibration_data` takes), scored by
            the relative squared change of the model's outputs
            ``||f_pruned(x) - f(x)||^2 / ||f(x)||^2`` (logits, for a classifier);
            or, with ``loss=``, a pair ``(x, y)`` of arrays, scored by the loss.
        target_latency: The target as a fraction of the dense model's latency,
            in (0, 1] (1 keeps the model dense).
        structure: ``"channel"`` (output channels, removed by ``shrink_model``).
        fractions: Candidate fractions of each layer's channels to prune, in
            [0, 1); every layer keeps at least one channel. Include 0 to let a
            layer stay dense.
        loss: A Keras loss (name, function or ``keras.losses.Loss``) for
            ``(x, y)`` calibration data, e.g.
            ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)``.
        search_steps: Steps of SPDY's coefficient search (0: the DP alone).
        seed: Seed of the search.
        tolerance: How far above the target (in fractions of the dense
            latency) the measured latency may be; a round that misses by more
            (either way) is followed by another, up to ``max_rounds``.
        max_rounds: Measure-solve-check rounds at most (the tables are
            measured around the dense model, then once around the first choice).
        max_samples: Calibration examples used.
        recalibrate_batchnorm: Score each candidate with its BatchNorm
            statistics re-estimated on the calibration inputs
            (:func:`tfcompress.core.batchnorm.recalibrated_batchnorm`), so the
            errors measure the pruning rather than stale statistics, which a
            fine-tune re-estimates anyway. No effect without BatchNorm.
        num_threads: LiteRT interpreter threads the latency is measured with.
        timer: ``models -> seconds`` (default
            :class:`~tfcompress.allocation.latency.LiteRTTimer`); tests inject one.
        cache: Read and keep per-layer latencies in the cache.
        cache_dir: The cache folder (default ``latency`` in
            ``$TFCOMPRESS_CACHE_DIR`` or ``~/.cache/tfcompress``).
        errors_from: A plan made earlier for the same model, calibration data,
            loss and fractions (another target): its per-layer, per-option
            errors are used instead of measuring them again, so a sweep over
            targets scores each option once. Only the layers and options are
            checked, so pass a plan of the same starting model.
        verbose: 1 shows progress bars and one line per round; 0 is silent.

    Returns:
        A :class:`~tfcompress.allocation.channel_plan.SparsityPlan`.

    Raises:
        ValueError: Before anything is measured: an unknown ``structure``, a
            target outside (0, 1], empty or out-of-range ``fractions``, missing,
            empty or mis-shaped calibration data, bad counts, a model without
            channel-prunable layers, an ``errors_from`` plan whose layers or
            options differ from this call's. After the dense latency tables: a target
            below the smallest latency the fractions reach (the message gives it).

    Example:
        >>> plan = sparsity(model, (x[:512], y[:512]), 0.6,
        ...                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> plan.measured_latency      # e.g. 0.61
    """
    target, values = _check(
        model,
        target_latency,
        structure,
        fractions,
        search_steps,
        tolerance,
        max_rounds,
        num_threads,
        max_samples,
    )
    names = channel_prunable_layers(model)
    graph = ChannelGraph(model, names)
    if not isinstance(recalibrate_batchnorm, bool):
        raise ValueError(
            f"recalibrate_batchnorm must be True or False, got {recalibrate_batchnorm!r}"
        )
    scorer = _scorer(model, calibration_data, loss, max_samples, recalibrate_batchnorm)
    timer = timer if timer is not None else LiteRTTimer(num_threads=num_threads)
    timer_name = getattr(timer, "cache_name", None) or getattr(timer, "__qualname__", None)
    machine = {**machine_key(num_threads), "timer": timer_name or type(timer).__qualname__}
    store = LatencyCache(cache_dir, machine) if cache else None
    channels = {name: graph.channels(name) for name in names}
    options = {n: sorted({min(round(f * c), c - 1) for f in values}) for n, c in channels.items()}
    kept = {n: [channels[n] - p for p in pruned] for n, pruned in options.items()}
    pruner = ChannelPruner(model, names)
    if errors_from is not None and not isinstance(errors_from, SparsityPlan):
        raise ValueError(
            f"errors_from must be a SparsityPlan; received {type(errors_from).__name__}"
        )
    reused = errors_from.option_errors_for(options) if errors_from is not None else None

    def bar(count: int | None, unit: str) -> Any:
        return keras.utils.Progbar(count, unit_name=unit) if verbose else None

    def counts(choices: Sequence[int]) -> dict[str, int]:
        return {name: options[name][k] for name, k in zip(names, choices)}

    def check(choices: Sequence[int]) -> float:
        return latency_ratio(model, shrink_model(pruner.set(counts(choices))), timer)[0]

    solved: list[_Round] = []
    points: list[tuple[float, float]] = []
    errors: list[list[float]] = []
    clamped: list[list[float]] = []
    for number in range(max_rounds):
        if number <= 1:  # the dense model's tables, then once more around the first choice
            reference = dict(channels)
            if number == 1:
                reference = {n: channels[n] - p for n, p in counts(solved[0].choices).items()}
            if verbose:
                print(f"latency tables around the {'dense' if number == 0 else 'first'} choice")
            tables = latency_tables(graph, kept, reference, timer, store, bar(None, "probe"))
        if number == 0:
            fraction = target
            _, budget, smallest = _discretise(tables, target)
            if budget < 0:
                raise ValueError(
                    f"target_latency={target_latency!r} is unreachable: with fractions up to "
                    f"{values[-1]:g} the smallest predicted latency is {smallest:.3f} of the "
                    f"dense model's ({tables.dense * 1e3:.4g} ms); ask for at least "
                    f"{math.ceil(smallest * 1000) / 1000:.3f} or allow larger fractions"
                )
            if reused is not None:
                errors = reused
            else:
                progress = bar(sum(len(o) for o in options.values()), "candidate")
                errors = _layer_errors(scorer, pruner, options, progress)
            clamped = [[max(0.0, e) for e in row] for row in errors]
        elif number == 1:  # the first choice's measured/predicted ratio on the new tables
            first = solved[0]
            bias = first.measured / (tables.predict(first.choices) / tables.dense)
            fraction = target / bias if bias > 0 else target
        else:
            fraction = _next_budget(points, target)
        costs, budget, smallest = _discretise(tables, fraction)
        if budget < 0:  # rescaled below what the tables reach: prune the most
            fraction = smallest
            costs, budget, _ = _discretise(tables, smallest + 1e-9)
        choices = solve_budget(costs, clamped, budget).choices
        earlier = next((r for r in solved if r.choices == choices), None)
        measured = earlier.measured if earlier is not None else check(choices)
        solved.append(
            _Round(
                number,
                choices,
                tables,
                costs,
                budget,
                fraction,
                tables.predict(choices) / tables.dense,
                measured,
            )
        )
        if number >= 1:
            points.append((fraction, measured))
        if verbose:
            print(
                f"round {number}: budget {fraction:.3f}, predicted {solved[-1].predicted:.3f}"
                f", measured {measured:.3f} x dense (target {target:.3f})"
            )
        if abs(measured - target) <= tolerance:
            break
    records = [r.record("dp") for r in solved]
    best = _best_round(solved, target, tolerance)
    choices, measured, tables = best.choices, best.measured, best.tables
    notes = [
        f"latency: float32 LiteRT, {num_threads} thread(s), batch 1, invoke only; each pruned "
        "layer's segment (the layer and the BatchNorm/activation/pooling/depthwise layers "
        "after it) timed alone, plus what its consumers save on their inputs, minus the "
        f"invoke overhead ({tables.overhead * 1e6:.3g} us); minimum over interleaved rounds",
        f"error: {'loss increase' if scorer.measure == 'loss' else 'relative output error'} "
        f"on {scorer.samples} calibration examples, one layer pruned at a time (lowest-L1 "
        "filters)",
    ]
    if tables.fixed_clamped:
        notes.append("the timed parts add up to more than the whole model: fixed cost set to 0")
    summary: dict[str, Any] = {"steps": search_steps, "seed": seed}
    if search_steps:
        found = search(
            best.costs,
            clamped,
            best.budget,
            lambda candidate: scorer.increase(pruner.set(counts(candidate))),
            steps=search_steps,
            seed=seed,
            progress=bar(search_steps, "step"),
        )
        summary.update(evaluations=found.evaluations, dp_loss=found.dp_loss, best_loss=found.loss)
        if found.choices != choices:
            searched = check(found.choices)
            records.append(best.record("search", found.choices, searched))
            if searched <= max(target + tolerance, measured):
                choices, measured = found.choices, searched
                summary["kept"] = True
            else:
                notes.append(
                    "the search's choice missed the latency target when measured; "
                    "the plain DP's choice is kept"
                )
    if measured > target + tolerance:
        notes.append(
            f"measured latency {measured:.3f} misses the target {target:.3f} by more "
            f"than tolerance={tolerance:g}"
        )
    elif measured < target - tolerance:
        notes.append(
            f"measured latency {measured:.3f} is below the target {target:.3f} by more "
            f"than tolerance={tolerance:g}: finer fractions= would keep more channels"
        )
    layers = [
        LayerChoice(
            layer=name,
            choice=options[name][k] / channels[name],
            cost=tables.seconds[i][k] * 1e3,
            error=errors[i][k],
            options=tuple(p / channels[name] for p in options[name]),
            option_costs=tuple(s * 1e3 for s in tables.seconds[i]),
            option_errors=tuple(errors[i]),
        )
        for i, (name, k) in enumerate(zip(names, choices))
    ]
    return SparsityPlan(
        layers=layers,
        budget=target * tables.dense * 1e3,
        fixed_cost=tables.fixed * 1e3,
        dense_cost=tables.dense * 1e3,
        cost_name="latency",
        cost_unit="ms",
        choice_name="channel fraction",
        error_name="loss increase" if scorer.measure == "loss" else "output error",
        notes=notes,
        structure=structure,
        target_latency=target,
        channels=channels,
        pruned=counts(choices),
        measured=records,
        measured_latency=measured,
        search=summary,
    )
