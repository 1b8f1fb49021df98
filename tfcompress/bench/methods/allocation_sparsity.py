"""Channel pruning to a measured latency target: SPDY's per-layer fractions against one
uniform fraction, both shrunk to the same float LiteRT latency.

The level is the target latency as a fraction of the dense model's (float32
LiteRT, one thread, batch 1). ``spdy_channel`` chooses a fraction per layer with
:func:`tfcompress.allocation.sparsity.sparsity` (measured latency tables, the
calibration loss increase per layer and option, DP plus SPDY's search);
``uniform_channel_latency`` prunes every channel-prunable layer by the same
fraction, found by bisection on the measured latency of the shrunk model. Both
then prune gradually during the workload's fine-tune (``GradualPruning``,
``granularity="channel"``, L1 filters, as ``channel_shrink`` does) and
``shrink_model`` the result, so their accuracies compare at equal latency.
"""

from __future__ import annotations

import keras

from tfcompress.allocation.channel_plan import prune_channels
from tfcompress.allocation.sparsity import latency_ratio, sparsity
from tfcompress.bench.api import Compressed, MethodRun, register_method
from tfcompress.bench.methods.budget import schedule_steps
from tfcompress.bench.methods.common import copy_model, measured_once
from tfcompress.pruning.callbacks import GradualPruning
from tfcompress.pruning.channels import channel_prunable_layers
from tfcompress.pruning.shrink import shrink_model

__all__ = ["uniform_fraction"]

LATENCY_TARGETS = (0.8, 0.6, 0.5, 0.4)
QUICK_TARGETS = (0.6,)
SEARCH_STEPS = 50
CALIBRATION = 512
BISECTION_STEPS = 6
_MAX_FRACTION = 0.9


def _counts(channels: dict[str, int], fraction: float) -> dict[str, int]:
    return {name: min(round(fraction * c), c - 1) for name, c in channels.items()}


def _gradual(
    channels: dict[str, int], pruned: dict[str, int], run: MethodRun
) -> list[GradualPruning]:
    """One channel ``GradualPruning`` per distinct exact fraction (a count per layer)."""
    end, frequency = schedule_steps(run.workload)
    groups: dict[float, list[str]] = {}
    for name, count in pruned.items():
        if count:
            groups.setdefault(count / channels[name], []).append(name)
    return [
        GradualPruning(
            fraction,
            begin_step=0,
            end_step=end,
            frequency=frequency,
            granularity="channel",
            layers=names,
        )
        for fraction, names in sorted(groups.items())
    ]


def uniform_fraction(
    model: keras.Model, layers: list[str], target: float, steps: int = BISECTION_STEPS
) -> tuple[float, float]:
    """The smallest single channel fraction whose shrunk model meets ``target`` when timed.

    Bisection on the measured latency ratio (shrunk / dense, interleaved) over
    fractions in [0, 0.9]; the model is pruned one-shot for timing only.

    Returns:
        ``(fraction, measured ratio)``; at 0.9 when even that misses the target.
    """
    channels = {name: int(model.get_layer(name).kernel.shape[-1]) for name in layers}

    def ratio(fraction: float) -> float:
        small = shrink_model(prune_channels(model, _counts(channels, fraction)))
        return latency_ratio(model, small)[0]

    low, high = 0.0, _MAX_FRACTION
    high_ratio = ratio(high)
    if high_ratio > target:
        return high, high_ratio
    for _ in range(steps):
        middle = (low + high) / 2
        measured = ratio(middle)
        if measured <= target:
            high, high_ratio = middle, measured
        else:
            low = middle
    return high, high_ratio


@register_method(
    "spdy_channel",
    relative_cost=5,
    family="pruning",
    levels=LATENCY_TARGETS,
    quick_levels=QUICK_TARGETS,
    level_name="latency fraction",
    applies_to=("classification",),
    description="tfc.allocate.sparsity: per-layer channel fractions for a measured float "
    "LiteRT latency (SPDY, Frantar & Alistarh 2022: latency tables, DP, coefficient search "
    "on 512 calibration examples), then gradual channel pruning and shrink_model",
)
def spdy_channel(model: keras.Model, run: MethodRun) -> Compressed:
    pruned = copy_model(model)
    x, y = run.calibration_pairs(CALIBRATION)

    def plan_for(errors_from=None):
        return sparsity(
            pruned,
            (x, y),
            run.level,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            search_steps=SEARCH_STEPS,
            seed=run.seed,
            errors_from=errors_from,
            verbose=0,
        )

    # The per-layer errors depend on the starting model and calibration data, not on the
    # target: the first level's arm of each starting model measures them, the others reuse.
    first, reused = measured_once(f"spdy_errors/{CALIBRATION}/seed {run.seed}", model, plan_for)
    plan = plan_for(errors_from=first) if reused else first
    run.finetune(pruned, callbacks=_gradual(plan.channels, plan.pruned, run))
    small = shrink_model(pruned)
    predicted = plan.total_cost / plan.dense_cost
    fractions = ", ".join(f"{c.layer} {c.choice:.2f}" for c in plan.layers)
    notes = (
        f"latency target {run.level:g}: predicted {predicted:.3f}, measured "
        f"{plan.measured_latency:.3f} x dense (float LiteRT, 1 thread, shrunk one-shot "
        f"model, same widths); channel fractions: {fractions}"
    )
    if reused:
        notes += "; per-layer errors measured in an earlier level's arm (same starting model)"
    return Compressed(small, export=None, notes=notes)


@register_method(
    "uniform_channel_latency",
    relative_cost=2,
    family="pruning",
    levels=LATENCY_TARGETS,
    quick_levels=QUICK_TARGETS,
    level_name="latency fraction",
    applies_to=("classification",),
    description="baseline for spdy_channel: one channel fraction for every channel-prunable "
    "layer, found by bisection on the measured float LiteRT latency, then gradual channel "
    "pruning and shrink_model",
)
def uniform_channel_latency(model: keras.Model, run: MethodRun) -> Compressed:
    pruned = copy_model(model)
    layers = channel_prunable_layers(pruned)
    channels = {name: int(pruned.get_layer(name).kernel.shape[-1]) for name in layers}
    # The latency of a width does not depend on the weights: one bisection per level serves
    # every seed's model (the same architecture).
    (fraction, measured), reused = measured_once(
        f"uniform_fraction/{run.level}",
        pruned,
        lambda: uniform_fraction(pruned, layers, run.level),
        weights=False,
    )
    run.finetune(pruned, callbacks=_gradual(channels, _counts(channels, fraction), run))
    small = shrink_model(pruned)
    notes = (
        f"latency target {run.level:g}: fraction {fraction:.3f} on {', '.join(layers)}; "
        f"measured {measured:.3f} x dense (float LiteRT, 1 thread, bisection, "
        f"{BISECTION_STEPS} steps{', in an earlier seed' if reused else ''})"
    )
    return Compressed(small, export=None, notes=notes)
