"""``SparsityPlan``: how many output channels each layer loses, and how to get there.

A plan made by :func:`tfcompress.allocation.sparsity.sparsity` applies itself in
one shot (prune the lowest-L1 filters, then ``shrink_model``) or becomes
``GradualPruning`` callbacks that reach the same per-layer channel counts
during ``fit``. :func:`prune_channels` is the one-shot pruning both use.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from tfcompress.allocation.plan import Plan
from tfcompress.pruning.callbacks import GradualPruning
from tfcompress.pruning.masks import compute_masks
from tfcompress.pruning.shrink import shrink_model

__all__ = ["ChannelPruner", "SparsityPlan", "prune_channels"]


def _copy(model: keras.Model) -> keras.Model:
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


class ChannelPruner:
    """A copy of a model whose layers lose their lowest-L1 output channels, undoably.

    Channels are masked as ``GradualPruning(granularity="channel")`` masks them:
    the kernel slice, the bias, and the BatchNorm/depthwise channels after a
    pruned filter, so ``shrink_model`` removes them whole. The masks stay on
    the copy (a fine-tune keeps them at zero). Scores are the L1 norms of the
    original filters, whatever was pruned before.

    Args:
        model: The model (not changed).
        names: The layers that may be pruned.

    Example:
        >>> pruner = ChannelPruner(model, ["conv1", "conv2"])
        >>> pruned = pruner.set({"conv1": 8})   # the copy, 8 filters of conv1 zeroed
        >>> pruner.set({"conv2": 4})            # conv1 whole again, 4 of conv2 zeroed
    """

    def __init__(self, model: keras.Model, names: Sequence[str]):
        self.model = _copy(model)
        # A callback used outside fit, for its masks and their followers.
        self.pruning = GradualPruning(0.0, granularity="channel", layers=list(names))
        self.pruning.set_model(self.model)
        self.targets = self.pruning.targets
        variables = [t.variable for t in self.targets] + [f[0] for f in self.pruning._followers]
        self.saved = [(v, np.asarray(keras.ops.convert_to_numpy(v))) for v in variables]
        self.originals = {t.layer.name: value for t, (_, value) in zip(self.targets, self.saved)}
        self._masks: dict[tuple[str, int], np.ndarray] = {}

    def _mask(self, target: Any, pruned: int) -> np.ndarray:
        key = (target.layer.name, int(pruned))
        if key not in self._masks:
            weight = self.originals[target.layer.name]
            channels = int(weight.shape[-1])
            self._masks[key] = compute_masks(
                [weight], pruned / channels, "channel", channel_axes=[target.channel_axes]
            )[0]
        return self._masks[key]

    def set(self, pruned: dict[str, int]) -> keras.Model:
        """The copy with ``pruned[name]`` channels of each named layer zeroed (others whole)."""
        for variable, value in self.saved:
            variable.assign(value)
        masks = [self._mask(t, pruned.get(t.layer.name, 0)) for t in self.targets]
        self.pruning.set_masks(masks)
        return self.model


def prune_channels(model: keras.Model, pruned: dict[str, int]) -> keras.Model:
    """A copy of ``model`` with ``pruned[name]`` lowest-L1 output channels of each layer zeroed.

    Each layer keeps at least one channel; ``shrink_model`` then removes the
    zeroed ones (see :class:`ChannelPruner`).

    Raises:
        ValueError: If a count is negative or would remove every channel of its layer.

    Example:
        >>> small = tfc.shrink_model(prune_channels(model, {"conv1": 16}))
    """
    for name, count in pruned.items():
        width = int(model.get_layer(name).kernel.shape[-1])
        if not 0 <= int(count) < width:
            raise ValueError(
                f"pruned[{name!r}]={count!r} must be in [0, {width - 1}]: layer {name!r} has "
                f"{width} output channels and keeps at least one"
            )
    return ChannelPruner(model, list(pruned)).set(pruned)


@dataclasses.dataclass
class SparsityPlan(Plan):
    """A per-layer channel-pruning plan under a latency budget.

    Choices are the fractions of each layer's output channels removed; costs
    are predicted latencies in ms (a layer's segment, plus the change it causes
    in its consumers' time, which can make the entry negative); errors are
    calibration loss increases, one layer pruned at a time.

    Attributes (besides :class:`~tfcompress.allocation.plan.Plan`'s):
        structure: ``"channel"``.
        target_latency: The target, as a fraction of the dense latency.
        channels: Per layer, its output channels before pruning.
        pruned: Per layer, how many output channels the plan removes.
        measured: One dict per solve: ``stage`` (``"dp"`` or ``"search"``),
            ``round``, ``budget`` (the fraction the knapsack was given),
            ``predicted`` and ``measured`` (fractions of the dense latency; the
            shrunk model timed for real).
        measured_latency: The chosen plan's measured fraction of the dense latency.
        search: The search's summary (steps, evaluations, DP and best loss, seed).
    """

    structure: str = "channel"
    target_latency: float = 1.0
    channels: dict[str, int] = dataclasses.field(default_factory=dict)
    pruned: dict[str, int] = dataclasses.field(default_factory=dict)
    measured: list[dict] = dataclasses.field(default_factory=list)
    measured_latency: float | None = None
    search: dict = dataclasses.field(default_factory=dict)

    def option_errors_for(self, options: dict[str, Sequence[int]]) -> list[list[float]]:
        """This plan's per-option errors for ``options`` (per layer, channels pruned per
        option), in that order; for a new target on the same model (``errors_from=``).

        Raises:
            ValueError: A layer missing here or with other options (the message names it).
        """
        by_layer = {choice.layer: choice for choice in self.layers}
        errors = []
        for name, pruned in options.items():
            choice = by_layer.get(name)
            expected = tuple(p / self.channels.get(name, 0) for p in pruned) if choice else ()
            if (
                choice is None
                or len(choice.options) != len(expected)
                or not all(
                    math.isclose(a, b, abs_tol=1e-9) for a, b in zip(choice.options, expected)
                )
            ):
                raise ValueError(
                    f"errors_from: layer {name!r} has options "
                    f"{None if choice is None else choice.options} in the given plan, but this "
                    f"call prunes {list(pruned)} channels; pass a plan made with the same model "
                    "and fractions"
                )
            errors.append(list(choice.option_errors))
        return errors

    def __str__(self) -> str:
        lines = [super().__str__()]
        for entry in self.measured:
            lines.append(
                f"{entry['stage']} round {entry['round']}: budget {entry['budget']:.3f}, "
                f"predicted {entry['predicted']:.3f}, measured {entry['measured']:.3f} x dense"
            )
        if self.measured_latency is not None:
            lines.append(
                f"measured: {self.measured_latency:.3f} x dense for a target of "
                f"{self.target_latency:.3f}"
            )
        return "\n".join(lines)

    def _check_model(self, model: keras.Model) -> None:
        if not isinstance(model, keras.Model):
            raise ValueError(f"model must be a keras.Model, got {type(model).__name__}")
        layers = {layer.name: layer for layer in model.layers}
        for name, channels in self.channels.items():
            layer = layers.get(name)
            kernel = getattr(layer, "kernel", None)
            width = None if kernel is None else int(kernel.shape[-1])
            if width != channels:
                found = "no such layer" if layer is None else f"it has {width}"
                raise ValueError(
                    f"model {model.name!r} does not match this plan: layer {name!r} should "
                    f"have {channels} output channels ({found}); apply a plan to the model "
                    "it was made for"
                )

    def apply(self, model: keras.Model) -> keras.Model:
        """One shot: prunes the planned channels (lowest L1 norm) and shrinks the model.

        Returns:
            A new, smaller model (``model`` is unchanged); a channel that
            ``shrink_model`` could not remove keeps its mask, so a fine-tune
            keeps it at zero.

        Raises:
            ValueError: If ``model`` does not have the plan's layers and widths.
        """
        self._check_model(model)
        return shrink_model(prune_channels(model, {k: v for k, v in self.pruned.items() if v}))

    def to_pruning(self, **kwargs: Any) -> list[GradualPruning]:
        """``GradualPruning(granularity="channel")`` callbacks reaching the plan during ``fit``.

        One callback per distinct fraction, on the layers pruned by it (layers the
        plan keeps dense get none). Several callbacks on disjoint layers of one
        model work together in one ``fit``; each logs its own ``sparsity/<layer>``
        (the overall ``sparsity`` log is the last callback's). ``shrink_model``
        afterwards.

        Args:
            **kwargs: Passed to every ``GradualPruning`` (``begin_step``,
                ``end_step``, ``frequency``, ``schedule``, ...).

        Raises:
            ValueError: If ``kwargs`` sets ``target_sparsity``, ``granularity``
                or ``layers`` (the plan sets those).

        Example:
            >>> model.fit(x, y, epochs=3, callbacks=plan.to_pruning(end_step=200, frequency=20))
            >>> small = tfc.shrink_model(model)
        """
        fixed = sorted({"target_sparsity", "granularity", "layers"} & set(kwargs))
        if fixed:
            raise ValueError(
                f"to_pruning sets {fixed} itself from the plan; pass only the schedule "
                f"arguments (begin_step, end_step, frequency, ...), got {sorted(kwargs)}"
            )
        groups: dict[float, list[str]] = {}
        for name, pruned in self.pruned.items():
            if pruned:
                groups.setdefault(pruned / self.channels[name], []).append(name)
        return [
            GradualPruning(fraction, granularity="channel", layers=names, **kwargs)
            for fraction, names in sorted(groups.items())
        ]
