"""``GradualPruning`` and ``KeepSparsity``: pruning as a callback for ``model.fit``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from tfcompress.pruning.heads import attention_head_targets, head_masks
from tfcompress.pruning.masking import MaskedTraining, deserialize_layers, serialize_layers
from tfcompress.pruning.masks import (
    PruningCriterion,
    compute_masks,
    get_criterion,
    parse_granularity,
)
from tfcompress.pruning.prunable import LayerSelector, PrunableWeight
from tfcompress.pruning.schedules import (
    ConstantSparsity,
    FunctionSparsity,
    PolynomialSparsity,
    SparsitySchedule,
)
from tfcompress.pruning.validation import check_fraction, check_int, check_positive

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


def gradient_batches(
    data: Any, index: int, count: int, size: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` consecutive chunks of ``size`` examples (cycling) for update ``index``.

    Deterministic in ``index``, so a resumed run sees the same batches.
    """
    x, y = np.asarray(data[0]), np.asarray(data[1])
    n = len(x)
    size = min(size, n)
    out = []
    for j in range(count):
        take = (np.arange(size) + (index * count + j) * size) % n
        out.append((x[take], y[take]))
    return out


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

    Each pruned weight's constraint becomes a
    :class:`tfcompress.pruning.constraint.PruningMask`, applied inside the
    compiled train step; this callback only assigns new masks at the update
    steps of its sparsity schedule. Steps are counted from the callback's own
    start (the first train step of its run is step 0), whatever the optimizer
    has done before. Layers keep their names and classes; the masks stay on the
    model after ``fit``, in later fits and in its ``.keras`` file, until
    :func:`tfcompress.remove_masks`. An update due after the run's last step
    (``end_step`` equal to the number of steps) is applied right after it,
    so the target holds exactly from ``end_step`` on. Every callback's epoch
    logs get ``sparsity`` and ``sparsity/<layer>`` (TensorBoard included,
    wherever it is listed).

    Resumable: the step count, the last update and the masks are saved with the
    masks, so a run resumed with ``keras.callbacks.BackupAndRestore`` (listed
    anywhere) or from a saved ``.keras`` model continues exactly; a callback
    with another configuration starts a new run at step 0.

    Args:
        target_sparsity: Final fraction of zeros, in [0, 1). For N:M it must
            be ``1 - N/M`` (None sets it).
        begin_step: First pruning step (counted from the callback's start).
        end_step: Step at which the target is reached (> begin_step). None:
            two thirds of the way from ``begin_step`` to the run's last step,
            leaving the rest to recover (give it explicitly when a run spans
            several ``fit`` calls).
        frequency: Steps between mask updates (the polynomial schedule also
            updates at ``end_step``, on the grid or not).
        schedule: ``"polynomial"`` (Zhu & Gupta), ``"constant"`` (one update,
            at ``begin_step``), a :class:`tfcompress.schedules.SparsitySchedule`
            (its own update steps; ``begin_step``, ``end_step`` and
            ``frequency`` are then ignored) or any callable ``step -> sparsity``
            (then masks are updated every ``frequency`` steps from
            ``begin_step`` to ``end_step``, or forever if it is None).
        granularity: ``"unstructured"``, ``"block"`` (see ``block_shape``),
            ``"channel"`` (whole output channels/filters, with their bias and,
            along a single-consumer chain, the BatchNorm scale/offset and
            depthwise channel that follow, so the channel is exactly zero and
            ``shrink_model`` removes it all) or ``"N:M"`` such as
            ``"2:4"`` (N non-zeros in every M consecutive weights along the
            input dimension), or ``"head"``: whole heads of the selected
            ``keras.layers.MultiHeadAttention`` layers (their query, key,
            value and output projections and the q/k/v biases, scored
            together; ``target_sparsity`` is the fraction of heads; every
            layer keeps one), which ``shrink_model`` then removes
            (:mod:`tfcompress.pruning.heads`).
        scope: ``"layer"`` (each weight reaches the target) or ``"global"``
            (one ranking over all selected weights).
        criterion: ``"magnitude"``, ``"taylor"`` (first-order Taylor, needs
            ``data``), ``"mfac"`` (second-order WoodFisher saliency from M-FAC's
            inverse empirical Fisher of several mini-batch gradients, needs
            ``data``; see :class:`tfcompress.pruning.MFACCriterion`) or a
            :class:`tfcompress.pruning.masks.PruningCriterion`.
        layers: Which layers: None (all prunable), names, classes or a
            predicate ``layer -> bool``.
        block_shape: ``(rows of K, columns of C)`` for block granularity
            (default ``(1, 4)``).
        power: Exponent of the polynomial schedule.
        data: ``(x, y)`` examples for gradient criteria (not part of the config).
        verbose: 1 prints the sparsity at each epoch end.

    Raises:
        ValueError: For a sparsity outside [0, 1), ``end_step <= begin_step``,
            ``frequency < 1``, a number given as a string, an unknown or
            malformed granularity, scope or criterion. At the start of ``fit``, before anything changes: a
            selection that matches no layer, channel granularity on a weight
            without channels, head granularity on a selection with a layer
            that is not MultiHeadAttention (or a model without one), a
            gradient criterion without ``data``.

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
        custom = callable(schedule) and not isinstance(schedule, str)
        if target_sparsity is not None:
            target_sparsity = check_fraction("target_sparsity", target_sparsity)
        if self.granularity.kind == "n:m":
            limit = self.granularity.max_sparsity
            if target_sparsity is None:
                target_sparsity = limit
            elif abs(target_sparsity - limit) > 1e-9:
                raise ValueError(
                    f"target_sparsity={target_sparsity!r} does not match granularity="
                    f"{granularity!r}, which fixes it at 1 - N/M = {limit:g} (or pass None)"
                )
        if target_sparsity is None and not custom:
            raise ValueError("target_sparsity must be a number in [0, 1), got None")
        self.target_sparsity = target_sparsity
        begin_step = check_int("begin_step", begin_step, minimum=0)
        end_step = check_int("end_step", end_step, minimum=begin_step + 1, none_ok=True)
        frequency = check_int("frequency", frequency, minimum=1)
        if not custom and schedule not in ("polynomial", "constant"):
            raise ValueError(
                f"schedule must be 'polynomial', 'constant', a SparsitySchedule or a callable "
                f"step -> sparsity, got {schedule!r}"
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
        self.power = check_positive("power", power)
        # Checked for presence at the start of fit, so a config (which leaves
        # data out) still round-trips.
        self.data = validate_data(data, False, "GradualPruning")
        self.mask_bias = self.granularity.kind in ("channel", "head")
        self._head_groups: list[list[int]] = []
        self.sparsity_schedule = self._make_schedule()
        self._active: SparsitySchedule = self.sparsity_schedule

    # --- schedule: the one source of when masks update
    def _make_schedule(self) -> SparsitySchedule:
        if isinstance(self.schedule, SparsitySchedule):
            return self.schedule
        if callable(self.schedule) and not isinstance(self.schedule, str):
            return FunctionSparsity(self.schedule, self.begin_step, self.end_step, self.frequency)
        if self.schedule == "constant":
            return ConstantSparsity(self.target_sparsity, self.begin_step)
        return PolynomialSparsity(
            self.target_sparsity,
            self.begin_step,
            self.end_step,
            power=self.power,
            frequency=self.frequency,
        )

    def is_update_step(self, step: int) -> bool:
        """Whether masks update before the callback's own step ``step`` (this fit's schedule)."""
        return self._active.is_update_step(step)

    def schedule_update_steps(self, total_steps: int) -> tuple[int, ...]:
        return self._active.update_steps(total_steps)

    # --- MaskedTraining hooks
    def find_targets(self, model: keras.Model) -> list[PrunableWeight]:
        if self.granularity.kind != "head":
            return super().find_targets(model)
        targets, self._head_groups = attention_head_targets(model, self.layers)
        return targets

    def _channel_followers(self, target: PrunableWeight) -> list[tuple[Any, int]]:
        if self.granularity.kind != "head":
            return super()._channel_followers(target)
        # A pruned head's query, key and value biases (heads, head_dim) go with it; the
        # output projection's bias is shared by every head.
        bias = getattr(target.layer, "bias", None)
        if target.channel_axes == (0,) or not isinstance(bias, keras.Variable):
            return []
        return [(bias, 0)]

    def validate_targets(self, targets: list[PrunableWeight]) -> None:
        if self.granularity.kind == "channel":
            flat = [t.name for t in targets if t.channel_axes is None]
            if flat:
                raise ValueError(
                    f"granularity='channel' needs output channels, but {flat} have none "
                    "(e.g. an Embedding table); exclude them with layers="
                )

    def validate_fit(self) -> None:
        validate_data(self.data, self.criterion.needs_gradients, "GradualPruning")

    def resolve(self, total_steps: int | None) -> None:
        schedule = self.sparsity_schedule
        if (
            schedule.end_step is None
            and schedule.frequency is not None
            and not isinstance(schedule, FunctionSparsity)
        ):
            if total_steps is None:
                raise ValueError(
                    "end_step=None needs a known number of steps per epoch; pass end_step"
                )
            if total_steps <= schedule.begin_step + 1:
                raise ValueError(
                    f"begin_step={schedule.begin_step} leaves no room to prune in this run's "
                    f"{total_steps} steps; pass end_step"
                )
        self._active = schedule.resolved(total_steps) if total_steps is not None else schedule

    def compute(self, step: int) -> list[np.ndarray]:
        sparsity = float(self._active(step))
        if self.granularity.kind == "n:m":
            sparsity = min(sparsity, self.granularity.max_sparsity)
        gradients = None
        if self.criterion.needs_gradients:
            from tfcompress.core.gradients import loss_gradients

            self.sync_state()
            variables = [t.variable for t in self.targets]
            samples = int(getattr(self.criterion, "gradient_samples", 1))
            if samples == 1:
                x, y = gradient_batch(self.data, step // self.frequency)
                gradients = loss_gradients(self.model, variables, x, y)
            else:  # one (m, *shape) stack per weight, one mini-batch gradient per row
                size = self.criterion.gradient_batch_size or _GRADIENT_SAMPLES
                batches = gradient_batches(self.data, step // self.frequency, samples, size)
                per_batch = [loss_gradients(self.model, variables, x, y) for x, y in batches]
                gradients = [np.stack(column) for column in zip(*per_batch)]
        if self.granularity.kind == "head":
            return head_masks(
                self.weight_values(),
                self._head_groups,
                [t.channel_axes for t in self.targets],
                sparsity,
                self.criterion,
                scope=self.scope,
                gradients=gradients,
            )
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
        if self._active.is_update_step(step):
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

    def start_run(self) -> None:
        self.set_masks(self.zero_masks())

    def get_config(self) -> dict:
        return {"layers": serialize_layers(self.layers), "verbose": self.verbose}

    @classmethod
    def from_config(cls, config: dict) -> KeepSparsity:
        config = dict(config)
        config["layers"] = deserialize_layers(config.get("layers"))
        return cls(**config)
