"""Learning-rate callbacks: per-step schedules and rewinding tied to pruning.

Keras' ``LearningRateScheduler`` works per epoch. These set the optimizer's
rate before every batch from a ``step -> value`` schedule read at
``optimizer.iterations``, so a resumed run (``BackupAndRestore``) continues
with exactly the rate it would have had. The pruning coupling goes through the
protocols of :mod:`tfcompress.core.mask_updates`: pass the pruning callback (its
sparsity schedule says when masks change), a sparsity schedule, or the list of
mask-update steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras

from tfcompress.core.backend_state import StepTracker, sync_state
from tfcompress.core.mask_updates import MaskUpdater, MaskUpdateSchedule
from tfcompress.learning_rate.schedules import (
    _deserialize_schedule,
    _serialize_schedule,
    rewound_step,
    validate_restarts,
)

__all__ = ["LearningRateRewinding", "mask_update_steps"]


def mask_update_steps(pruning: Any, total_steps: int) -> tuple[int, ...]:
    """The steps ``(0, total_steps]`` at which ``pruning`` changes masks.

    Asks the one source: a mask-changing callback
    (:class:`tfcompress.core.mask_updates.MaskUpdater`, e.g. ``GradualPruning`` or
    ``DynamicSparseTraining`` during their fit, in the optimizer's count) or a
    sparsity schedule (:class:`tfcompress.core.mask_updates.MaskUpdateSchedule`, in
    its own count). Step 0 is dropped: a restart there changes nothing.

    Args:
        pruning: The pruning callback or sparsity schedule.
        total_steps: The last step of the run (optimizer steps for a callback).

    Returns:
        Sorted tuple of steps.

    Raises:
        ValueError: If ``pruning`` is neither.

    Example:
        >>> schedule = tfc.schedules.PolynomialSparsity(0.8, 0, 100, frequency=25)
        >>> mask_update_steps(schedule, total_steps=200)
        (25, 50, 75, 100)
    """
    if isinstance(pruning, MaskUpdater):
        steps = pruning.mask_update_steps(total_steps)
    elif isinstance(pruning, MaskUpdateSchedule):
        steps = pruning.update_steps(total_steps)
    else:
        raise ValueError(
            "`pruning` must be a pruning callback with `mask_update_steps(total_steps)` or a "
            f"sparsity schedule with `update_steps(total_steps)`, got {pruning!r}."
        )
    return tuple(sorted({int(s) for s in steps if 0 < int(s) <= total_steps}))


@keras.saving.register_keras_serializable(package="tfcompress")
class LearningRateRewinding(keras.callbacks.Callback):
    """Sets the learning rate every step from a schedule that restarts at mask updates.

    With no restarts it is a per-step ``LearningRateScheduler``. With
    ``restart_steps``, ``pruning`` or ``period`` it implements learning-rate
    rewinding (Renda et al. 2020): after each mask update the schedule replays
    from ``rewind_to``, so the rate rises again and the pruned network recovers.
    The rate at step ``s`` is ``schedule(rewound_step(s, ...))`` (see
    :func:`tfcompress.schedules.rewound_step`); it depends only on the
    optimizer's step, so resuming a run reproduces it.

    Args:
        schedule: ``step -> rate`` callable (e.g. ``tfc.schedules.WarmupCosine``
            or any ``LearningRateSchedule``).
        restart_steps: Steps at which to restart (integers > 0).
        pruning: A pruning callback in the same ``fit`` (or a sparsity
            schedule) whose mask-update steps are restarts too (asked at the
            first batch, see :func:`mask_update_steps`).
        period: Also restart every ``period`` steps.
        rewind_to: The schedule's step to restart from.

    Raises:
        ValueError: For a non-callable schedule or invalid restarts (at
            construction), or when training begins with an optimizer whose
            learning rate is itself a ``LearningRateSchedule``; for a ``pruning``
            that is neither a pruning callback nor a sparsity schedule.

    Example:
        >>> pruning = tfc.callbacks.GradualPruning(0.8, begin_step=0, end_step=300, frequency=100)
        >>> rewind = LearningRateRewinding(
        ...     tfc.schedules.WarmupCosine(1e-3, decay_steps=90, warmup_steps=10), pruning=pruning)
        >>> model.fit(x, y, epochs=10, callbacks=[pruning, rewind])

    References:
        Renda, Frankle, Carbin. "Comparing Rewinding and Fine-tuning in Neural
        Network Pruning", ICLR 2020.
    """

    def __init__(
        self,
        schedule: Callable[[Any], Any],
        restart_steps: Sequence[int] | None = None,
        pruning: Any | None = None,
        period: int | None = None,
        rewind_to: int = 0,
    ) -> None:
        super().__init__()
        if not callable(schedule):
            raise ValueError(f"`schedule` must be a step -> value callable, got {schedule!r}.")
        self.schedule = schedule
        self.restart_steps, self.period, self.rewind_to = validate_restarts(
            restart_steps, period, rewind_to
        )
        if pruning is not None and not isinstance(pruning, (MaskUpdater, MaskUpdateSchedule)):
            raise ValueError(
                "`pruning` must be a pruning callback (GradualPruning, DynamicSparseTraining) or "
                f"a sparsity schedule, got {pruning!r}."
            )
        self.pruning = pruning
        self._restarts: tuple[int, ...] = self.restart_steps
        self._first_epoch: int | None = None
        self._pending = False
        self._last_rate: float | None = None
        self._steps = StepTracker()

    @property
    def restarts(self) -> tuple[int, ...]:
        """The restart steps in use (explicit ones plus the pruning callback's)."""
        return self._restarts

    def rate_at(self, step: int) -> float:
        """The learning rate this callback sets at optimizer step ``step``."""
        rewound = rewound_step(step, self._restarts, self.period, self.rewind_to)
        return float(keras.ops.convert_to_numpy(self.schedule(rewound)))

    def on_train_begin(self, logs: dict | None = None) -> None:
        optimizer = self.model.optimizer
        if isinstance(optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            raise ValueError(
                "LearningRateRewinding sets the optimizer's learning rate, but the optimizer "
                f"was built with the schedule {optimizer._learning_rate!r}; build it with a "
                "float learning rate and pass the schedule to this callback instead."
            )
        self._restarts = self.restart_steps
        # The pruning callback knows its update steps once every on_train_begin has
        # run (BackupAndRestore may restore its progress): ask at the first batch.
        self._pending = self.pruning is not None
        self._first_epoch = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._steps.reset()
        if self._first_epoch is None:
            self._first_epoch = epoch

    def _ask_pruning(self, batch: int) -> None:
        epochs = self.params.get("epochs") or 1
        steps = self.params.get("steps") or 0
        remaining = (epochs - (self._first_epoch or 0)) * steps - batch
        total = StepTracker.read(self.model) + remaining
        restarts = set(self.restart_steps) | set(mask_update_steps(self.pruning, total))
        self._restarts = tuple(sorted(restarts))
        self._pending = False

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self._pending:
            self._ask_pruning(batch)
        rate = self.rate_at(self._steps.step(self.model, batch))
        if rate != self._last_rate:
            sync_state(self.model)  # on JAX, so that the assignment reaches the step
            self.model.optimizer.learning_rate = rate
            self._last_rate = rate

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            )

    def get_config(self) -> dict[str, Any]:
        """Config; a ``pruning`` callback is stored as the restart steps it gave."""
        return {
            "schedule": _serialize_schedule(self.schedule),
            "restart_steps": list(self._restarts),
            "period": self.period,
            "rewind_to": self.rewind_to,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LearningRateRewinding:
        config = dict(config)
        config["schedule"] = _deserialize_schedule(config["schedule"])
        return cls(**config)
