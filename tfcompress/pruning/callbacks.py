"""``GradualPruning`` and ``KeepSparsity``: pruning as a callback for ``model.fit``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from tfcompress.pruning.masking import MaskedTraining, deserialize_layers, serialize_layers
from tfcompress.pruning.masks import (
    PruningCriterion,
    compute_masks,
    get_criterion,
    parse_granularity,
    validate_sparsity,
)
from tfcompress.pruning.prunable import LayerSelector, PrunableWeight
from tfcompress.pruning.schedules import ConstantSparsity, PolynomialSparsity

__all__ = ["GradualPruning", "KeepSparsity"]

_GRADIENT_SAMPLES = 256


def gradient_batch(data: Any, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``index``-th chunk (cycling) of ``data=(x, y)``: deterministic for a resume."""
    x, y = data
    n = len(x)
    size = min(_GRADIENT_SAMPLES, n)
    start = (index * size) % n
    take = (np.arange(size) + start) % n
    return np.asarray(x)[take], np.asarray(y)[take]


def validate_data(data: Any, needed: bool, owner: str) -> Any:
    if data is None:
        if needed:
            raise ValueError(
                f"{owner}: this criterion needs gradients; pass data=(x, y), a few hundred "
                "training examples and their targets"
            )
        return None
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and len(data[0]) == len(data[1])):
        raise ValueError(
            f"{owner}: data must be a pair (x, y) of equal-length arrays, got {type(data).__name__}"
        )
    if len(data[0]) == 0:
        raise ValueError(f"{owner}: data is empty")
    return (np.asarray(data[0]), np.asarray(data[1]))


@keras.saving.register_keras_serializable(package="tfcompress")
class GradualPruning(MaskedTraining):
    """Prunes weights during ``fit`` on a schedule, with no wrapper layers.

    Masks are non-trainable variables applied through each weight's constraint
    inside the compiled train step; this callback only recomputes them every
    ``frequency`` steps between ``begin_step`` and ``end_step`` (steps are
    ``model.optimizer.iterations``, so recompiling restarts the count). Layers
    keep their names and classes; after ``fit`` the pruned weights are simply
    zeros. The epoch logs get ``sparsity`` and ``sparsity/<layer>``.

    Resumable: pruned weights are exact zeros and the step is the optimizer's,
    so a run resumed with ``keras.callbacks.BackupAndRestore`` (or from a
    saved ``.keras`` model with its optimizer) re-derives the same masks and
    continues the schedule.

    Args:
        target_sparsity: Final fraction of zeros, in [0, 1). For N:M it must
            be ``1 - N/M`` (None sets it).
        begin_step: First pruning step.
        end_step: Step at which the target is reached (> begin_step). None:
            two thirds of the way from ``begin_step`` to the fit's last step,
            leaving the rest to recover (give it explicitly when a run spans
            several ``fit`` calls).
        frequency: Steps between mask updates.
        schedule: ``"polynomial"`` (Zhu & Gupta), ``"constant"`` (all at
            ``begin_step``), a :class:`tfcompress.schedules.SparsitySchedule`
            or any callable ``step -> sparsity`` (then masks are updated every
            ``frequency`` steps from ``begin_step`` to ``end_step``, or forever
            if it is None).
        granularity: ``"unstructured"``, ``"block"`` (see ``block_shape``),
            ``"channel"`` (whole output channels/filters, with their bias and,
            along a single-consumer chain, the BatchNorm scale/offset and
            depthwise channel that follow, so the channel is exactly zero and
            ``shrink_model`` removes it all) or ``"N:M"`` such as
            ``"2:4"`` (N non-zeros in every M consecutive weights along the
            input dimension).
        scope: ``"layer"`` (each weight reaches the target) or ``"global"``
            (one ranking over all selected weights).
        criterion: ``"magnitude"``, ``"taylor"`` (first-order Taylor, needs
            ``data``) or a :class:`tfcompress.pruning.masks.PruningCriterion`.
        layers: Which layers: None (all prunable), names, classes or a
            predicate ``layer -> bool``.
        block_shape: ``(rows of K, columns of C)`` for block granularity
            (default ``(1, 4)``).
        power: Exponent of the polynomial schedule.
        data: ``(x, y)`` examples for gradient criteria (not part of the config).
        verbose: 1 prints the sparsity at each epoch end.

    Raises:
        ValueError: For a sparsity outside [0, 1), ``end_step <= begin_step``,
            ``frequency < 1``, an unknown or malformed granularity, scope or
            criterion. At the start of ``fit``, before anything changes: a
            selection that matches no layer, channel granularity on a weight
            without channels, a gradient criterion without ``data``.

    Example:
        >>> pruning = tfc.callbacks.GradualPruning(0.8, begin_step=0, end_step=500,
        ...                                         frequency=50)
        >>> model.fit(x, y, epochs=10, callbacks=[pruning])
        >>> tfc.summary(model).sparsity  # ~0.8 over the pruned kernels

    References:
        Zhu, Gupta. "To prune, or not to prune", 2017. Molchanov et al.
        "Importance Estimation for Neural Network Pruning", CVPR 2019.
    """

    def __init__(
        self,
        target_sparsity: float | None,
        begin_step: int = 0,
        end_step: int | None = None,
        frequency: int = 100,
        schedule: str | Callable[[int], float] = "polynomial",
        granularity: str = "unstructured",
        scope: str = "layer",
        criterion: str | PruningCriterion = "magnitude",
        layers: LayerSelector = None,
        block_shape: Sequence[int] | None = None,
        power: float = 3.0,
        data: Any = None,
        verbose: int = 0,
    ):
        super().__init__(layers=layers, verbose=verbose)
        self.granularity = parse_granularity(granularity, block_shape)
        if self.granularity.kind == "n:m":
            limit = self.granularity.max_sparsity
            if target_sparsity is None:
                target_sparsity = limit
            elif abs(float(target_sparsity) - limit) > 1e-9:
                raise ValueError(
                    f"target_sparsity={target_sparsity!r} does not match granularity="
                    f"{granularity!r}, which fixes it at 1 - N/M = {limit:g} (or pass None)"
                )
        custom = callable(schedule) and not isinstance(schedule, str)
        if target_sparsity is None and not custom:
            raise ValueError("target_sparsity is required (a number in [0, 1))")
        self.target_sparsity = (
            None
            if target_sparsity is None
            else validate_sparsity(target_sparsity, "target_sparsity")
        )
        if not isinstance(begin_step, int) or begin_step < 0:
            raise ValueError(f"begin_step must be an integer >= 0, got {begin_step!r}")
        if end_step is not None and (not isinstance(end_step, int) or end_step <= begin_step):
            raise ValueError(
                f"end_step must be an integer > begin_step={begin_step}, got {end_step!r}"
            )
        if not isinstance(frequency, int) or frequency < 1:
            raise ValueError(f"frequency must be an integer >= 1, got {frequency!r}")
        if not custom and schedule not in ("polynomial", "constant"):
            raise ValueError(
                f"schedule must be 'polynomial', 'constant' or a callable step -> sparsity, "
                f"got {schedule!r}"
            )
        if scope not in ("layer", "global"):
            raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
        if scope == "global" and self.granularity.kind == "n:m":
            raise ValueError("scope='global' has no meaning for N:M granularity; use 'layer'")
        self.begin_step = begin_step
        self.end_step = end_step
        self.frequency = frequency
        self.schedule = schedule
        self.scope = scope
        self.criterion = get_criterion(criterion)
        self.power = float(power)
        # Checked for presence at the start of fit, so a config (which leaves
        # data out) still round-trips.
        self.data = validate_data(data, False, "GradualPruning")
        self._resolved_end: int | None = end_step
        self.mask_bias = self.granularity.kind == "channel"
        self._schedule_fn: Callable[[int], float] | None = None

    # --- schedule
    def _make_schedule(self) -> Callable[[int], float]:
        if callable(self.schedule) and not isinstance(self.schedule, str):
            return self.schedule
        if self.schedule == "constant":
            return ConstantSparsity(self.target_sparsity, self.begin_step)
        return PolynomialSparsity(
            self.target_sparsity, self.begin_step, self._resolved_end, power=self.power
        )

    def is_update_step(self, step: int) -> bool:
        end = self._resolved_end
        if step < self.begin_step or (end is not None and step > end):
            return False
        if self.schedule == "constant":
            return step == self.begin_step
        return (step - self.begin_step) % self.frequency == 0 or step == end

    def last_update_step(self, step: int) -> int | None:
        """The latest update step <= ``step`` (None if pruning has not begun)."""
        if step < self.begin_step:
            return None
        if self.schedule == "constant":
            return self.begin_step
        end = self._resolved_end
        capped = step if end is None else min(step, end)
        last = self.begin_step + (capped - self.begin_step) // self.frequency * self.frequency
        return end if end is not None and capped == end else last

    # --- MaskedTraining hooks
    def validate_targets(self, targets: list[PrunableWeight]) -> None:
        if self.granularity.kind == "channel":
            flat = [t.name for t in targets if t.channel_axes is None]
            if flat:
                raise ValueError(
                    f"granularity='channel' needs output channels, but {flat} have none "
                    "(e.g. an Embedding table); exclude them with layers="
                )

    def on_train_begin(self, logs: dict | None = None) -> None:
        validate_data(self.data, self.criterion.needs_gradients, "GradualPruning")
        if self.end_step is None and self.schedule == "polynomial":
            epochs, steps = self.params.get("epochs"), self.params.get("steps")
            if not epochs or not steps:
                raise ValueError(
                    "end_step=None needs a known number of steps per epoch; pass end_step"
                )
            total = epochs * steps
            if total <= self.begin_step + 1:
                raise ValueError(
                    f"begin_step={self.begin_step} leaves no room to prune in this fit's "
                    f"{total} steps; pass end_step"
                )
            self._resolved_end = self.begin_step + max(1, round(2 * (total - self.begin_step) / 3))
        self._schedule_fn = self._make_schedule()
        super().on_train_begin(logs)

    def initial_masks(self, step: int) -> list[np.ndarray] | None:
        last = self.last_update_step(step)
        if last is None or last == step:
            # Not begun (keep every weight) or an update is due now anyway.
            return [np.ones(tuple(t.variable.shape), np.float32) for t in self.targets]
        derived = self.zero_masks()
        achieved = 1.0 - sum(m.sum() for m in derived) / sum(m.size for m in derived)
        if achieved + 0.01 < float(self._schedule_fn(last)):
            # The zeros do not hold the schedule's state (e.g. a fresh model at a
            # late optimizer step): catch up now.
            return self.compute(step)
        return derived

    def compute(self, step: int) -> list[np.ndarray]:
        sparsity = float(self._schedule_fn(step))
        if self.granularity.kind == "n:m":
            sparsity = min(sparsity, self.granularity.max_sparsity)
        gradients = None
        if self.criterion.needs_gradients:
            from tfcompress.core.gradients import loss_gradients

            x, y = gradient_batch(self.data, step // self.frequency)
            self.sync_state()
            gradients = loss_gradients(self.model, [t.variable for t in self.targets], x, y)
        return compute_masks(
            self.weight_values(),
            sparsity,
            self.granularity,
            channel_axes=[t.channel_axes for t in self.targets],
            scope=self.scope,
            criterion=self.criterion,
            gradients=gradients,
        )

    def on_step(self, step: int) -> None:
        if self.is_update_step(step):
            self.set_masks(self.compute(step))

    def get_config(self) -> dict:
        if callable(self.schedule) and not isinstance(self.schedule, str):
            schedule: Any = keras.saving.serialize_keras_object(self.schedule)
        else:
            schedule = self.schedule
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
            "schedule": schedule,
            "granularity": str(self.granularity),
            "scope": self.scope,
            "criterion": keras.saving.serialize_keras_object(self.criterion),
            "layers": serialize_layers(self.layers),
            "block_shape": list(self.granularity.block_shape),
            "power": self.power,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config: dict) -> GradualPruning:
        config = dict(config)
        if isinstance(config.get("schedule"), dict):
            config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        config["criterion"] = keras.saving.deserialize_keras_object(config["criterion"])
        config["layers"] = deserialize_layers(config.get("layers"))
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfcompress")
class KeepSparsity(MaskedTraining):
    """Keeps the weights that are zero now at zero for the whole ``fit``.

    For fine-tuning an already pruned model (loaded from ``.keras``, pruned
    with :func:`tfcompress.prune_at_init`, or by hand) without changing its
    sparsity pattern.

    Args:
        layers: Which layers: None (all prunable), names, classes or a predicate.
        verbose: 1 prints the sparsity at each epoch end.

    Raises:
        ValueError: At the start of ``fit``, if ``layers`` matches no prunable layer.

    Example:
        >>> model = keras.saving.load_model("pruned.keras")
        >>> model.fit(x, y, epochs=2, callbacks=[tfc.callbacks.KeepSparsity()])
    """

    def get_config(self) -> dict:
        return {"layers": serialize_layers(self.layers), "verbose": self.verbose}

    @classmethod
    def from_config(cls, config: dict) -> KeepSparsity:
        config = dict(config)
        config["layers"] = deserialize_layers(config.get("layers"))
        return cls(**config)
