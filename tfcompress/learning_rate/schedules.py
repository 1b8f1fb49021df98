"""Learning-rate schedules for compression fine-tuning.

Each schedule exists twice: as a pure ``step -> value`` function on
``keras.ops`` (works on a Python int or a step tensor inside a compiled train
step) and as a serializable ``keras.optimizers.schedules.LearningRateSchedule``
that you pass to an optimizer. The callback forms live in
:mod:`tfcompress.learning_rate.rewinding`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
from keras import ops

from tfcompress.core.serialization import deserialize_schedule, serialize_schedule

__all__ = [
    "OneCycle",
    "Rewinding",
    "WarmupCosine",
    "one_cycle",
    "rewound_step",
    "warmup_cosine",
]

Schedule = Callable[[Any], Any]


def _check_positive_int(name: str, value: Any, allow_zero: bool = False) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be an integer {bound}, got {value!r}.")
    return value


def _check_non_negative(name: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"`{name}` must be a number >= 0, got {value!r}.")
    return float(value)


def _as_float(step: Any) -> Any:
    return ops.cast(step, "float32")


def _cosine_anneal(start: Any, end: Any, fraction: Any) -> Any:
    return end + (start - end) * 0.5 * (1.0 + ops.cos(math.pi * fraction))


def warmup_cosine(
    step: Any,
    peak_value: float,
    decay_steps: int,
    warmup_steps: int = 0,
    init_value: float = 0.0,
    end_value: float = 0.0,
) -> Any:
    """Linear warm-up from ``init_value`` to ``peak_value``, then cosine decay to ``end_value``.

    ``value(s) = init + (peak - init) * s / warmup`` for ``s < warmup``, then
    ``end + (peak - end) * (1 + cos(pi * min(s - warmup, decay) / decay)) / 2``.

    Args:
        step: The optimizer step (int or integer tensor).
        peak_value: Value at the end of warm-up.
        decay_steps: Length of the cosine phase, counted after warm-up.
        warmup_steps: Length of the linear warm-up.
        init_value: Value at step 0.
        end_value: Value from ``warmup_steps + decay_steps`` on.

    Returns:
        A float32 scalar tensor.

    Example:
        >>> float(warmup_cosine(5, peak_value=1.0, decay_steps=10, warmup_steps=10))
        0.5
    """
    s = _as_float(step)
    warm = float(warmup_steps)
    warmup = init_value + (peak_value - init_value) * s / max(warm, 1.0)
    fraction = ops.clip((s - warm) / float(decay_steps), 0.0, 1.0)
    decay = _cosine_anneal(peak_value, end_value, fraction)
    return ops.where(s < warm, warmup, decay)


def one_cycle(
    step: Any,
    max_value: float,
    total_steps: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Any:
    """Smith's one-cycle policy (cosine form): up to ``max_value``, then far below the start.

    Starts at ``max_value / div_factor``, rises by a half cosine to
    ``max_value`` at ``pct_start * total_steps``, then falls by a half cosine to
    ``max_value / (div_factor * final_div_factor)`` at ``total_steps`` and stays.

    Args:
        step: The optimizer step (int or integer tensor).
        max_value: The peak value.
        total_steps: Length of the whole cycle.
        pct_start: Fraction of the cycle spent rising, in ``(0, 1)``.
        div_factor: ``max_value / initial value``.
        final_div_factor: ``initial value / final value``.

    Returns:
        A float32 scalar tensor.

    Example:
        >>> float(one_cycle(30, max_value=1.0, total_steps=100))
        1.0

    References:
        Smith & Topin. "Super-Convergence", 2017 (arXiv:1708.07120).
    """
    s = _as_float(step)
    initial = max_value / div_factor
    final = initial / final_div_factor
    rise = pct_start * total_steps
    up = _cosine_anneal(initial, max_value, ops.clip(s / rise, 0.0, 1.0))
    down_fraction = ops.clip((s - rise) / (total_steps - rise), 0.0, 1.0)
    down = _cosine_anneal(max_value, final, down_fraction)
    return ops.where(s <= rise, up, down)


def rewound_step(
    step: Any,
    restart_steps: Sequence[int] = (),
    period: int | None = None,
    rewind_to: int = 0,
) -> Any:
    """The step at which a restarted schedule is read: rewinding (Renda et al. 2020).

    After each restart at step ``r`` the base schedule replays from
    ``rewind_to``: the rewound step is ``rewind_to + (step - r)`` where ``r`` is
    the latest restart ``<= step``; before the first restart it is ``step``.
    Restarts are the given ``restart_steps`` (e.g. pruning mask updates) and,
    with ``period``, every multiple of ``period`` (SGDR-style warm restarts).

    Args:
        step: The optimizer step (int or integer tensor).
        restart_steps: Steps at which the schedule restarts.
        period: Restart every ``period`` steps as well.
        rewind_to: The base schedule's step to restart from.

    Returns:
        A float32 scalar tensor.

    Example:
        >>> float(rewound_step(25, restart_steps=[10, 20]))
        5.0

    References:
        Renda, Frankle, Carbin. "Comparing Rewinding and Fine-tuning in Neural
        Network Pruning", ICLR 2020.
    """
    s = _as_float(step)
    last = ops.zeros((), "float32")
    restarted = ops.zeros((), "bool")
    if len(restart_steps):
        points = ops.convert_to_tensor([float(r) for r in restart_steps], "float32")
        reached = points <= s
        last = ops.maximum(last, ops.max(ops.where(reached, points, 0.0)))
        restarted = ops.logical_or(restarted, ops.any(reached))
    if period:
        by_period = ops.floor(s / float(period)) * float(period)
        last = ops.maximum(last, by_period)
        restarted = ops.logical_or(restarted, by_period > 0)
    return ops.where(restarted, float(rewind_to) + s - last, s)


@keras.saving.register_keras_serializable(package="tfcompress")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up then cosine decay, for fine-tuning a compressed model.

    See :func:`warmup_cosine` for the formula.

    Args:
        peak_learning_rate: Rate at the end of warm-up (> 0).
        decay_steps: Steps of cosine decay after warm-up (> 0).
        warmup_steps: Steps of linear warm-up (>= 0).
        initial_learning_rate: Rate at step 0 (>= 0).
        final_learning_rate: Rate after the decay (>= 0).

    Raises:
        ValueError: If a step count is not an integer of the right sign or a
            rate is negative (``peak_learning_rate`` must be > 0).

    Example:
        >>> schedule = WarmupCosine(1e-3, decay_steps=900, warmup_steps=100)
        >>> model.compile(optimizer=keras.optimizers.Adam(schedule), loss=...)
    """

    def __init__(
        self,
        peak_learning_rate: float,
        decay_steps: int,
        warmup_steps: int = 0,
        initial_learning_rate: float = 0.0,
        final_learning_rate: float = 0.0,
    ) -> None:
        if _check_non_negative("peak_learning_rate", peak_learning_rate) == 0:
            raise ValueError(f"`peak_learning_rate` must be > 0, got {peak_learning_rate!r}.")
        self.peak_learning_rate = float(peak_learning_rate)
        self.decay_steps = _check_positive_int("decay_steps", decay_steps)
        self.warmup_steps = _check_positive_int("warmup_steps", warmup_steps, allow_zero=True)
        self.initial_learning_rate = _check_non_negative(
            "initial_learning_rate", initial_learning_rate
        )
        self.final_learning_rate = _check_non_negative("final_learning_rate", final_learning_rate)

    def __call__(self, step: Any) -> Any:
        return warmup_cosine(
            step,
            self.peak_learning_rate,
            self.decay_steps,
            self.warmup_steps,
            self.initial_learning_rate,
            self.final_learning_rate,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "decay_steps": self.decay_steps,
            "warmup_steps": self.warmup_steps,
            "initial_learning_rate": self.initial_learning_rate,
            "final_learning_rate": self.final_learning_rate,
        }


@keras.saving.register_keras_serializable(package="tfcompress")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """The one-cycle learning-rate policy (cosine form). See :func:`one_cycle`.

    Args:
        max_learning_rate: Peak rate (> 0).
        total_steps: Length of the cycle (> 0).
        pct_start: Fraction of the cycle spent rising, in ``(0, 1)``.
        div_factor: Peak / initial rate (>= 1).
        final_div_factor: Initial / final rate (>= 1).

    Raises:
        ValueError: If an argument is outside the range stated above.

    Example:
        >>> optimizer = keras.optimizers.SGD(OneCycle(0.1, total_steps=450), momentum=0.9)

    References:
        Smith & Topin. "Super-Convergence", 2017 (arXiv:1708.07120).
    """

    def __init__(
        self,
        max_learning_rate: float,
        total_steps: int,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
    ) -> None:
        if _check_non_negative("max_learning_rate", max_learning_rate) == 0:
            raise ValueError(f"`max_learning_rate` must be > 0, got {max_learning_rate!r}.")
        self.max_learning_rate = float(max_learning_rate)
        self.total_steps = _check_positive_int("total_steps", total_steps)
        if not isinstance(pct_start, (int, float)) or not 0.0 < pct_start < 1.0:
            raise ValueError(f"`pct_start` must be in (0, 1), got {pct_start!r}.")
        self.pct_start = float(pct_start)
        for name, value in (("div_factor", div_factor), ("final_div_factor", final_div_factor)):
            if not isinstance(value, (int, float)) or value < 1.0:
                raise ValueError(f"`{name}` must be a number >= 1, got {value!r}.")
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)

    def __call__(self, step: Any) -> Any:
        return one_cycle(
            step,
            self.max_learning_rate,
            self.total_steps,
            self.pct_start,
            self.div_factor,
            self.final_div_factor,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "max_learning_rate": self.max_learning_rate,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
        }


def validate_restarts(
    restart_steps: Sequence[int] | None, period: int | None, rewind_to: int
) -> tuple[tuple[int, ...], int | None, int]:
    """Checks rewinding arguments; returns them normalised (sorted tuple of steps)."""
    steps = tuple(restart_steps or ())
    for r in steps:
        if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
            raise ValueError(
                f"`restart_steps` must hold integers > 0, got {list(restart_steps or ())!r}."
            )
    if period is not None:
        _check_positive_int("period", period)
    _check_positive_int("rewind_to", rewind_to, allow_zero=True)
    return tuple(sorted(set(steps))), period, rewind_to


@keras.saving.register_keras_serializable(package="tfcompress")
class Rewinding(keras.optimizers.schedules.LearningRateSchedule):
    """Learning-rate rewinding / warm restarts around any base schedule.

    The rate follows ``schedule`` and, at each restart step (typically the
    steps where pruning updates its masks), jumps back to ``schedule(rewind_to)``
    and replays it, so it rises again after every mask update (Renda et al.
    2020). ``period`` gives SGDR-style periodic restarts. See
    :func:`rewound_step`.

    Args:
        schedule: The base schedule: a ``LearningRateSchedule``, a
            ``step -> rate`` callable on ``keras.ops``, or a constant float.
        restart_steps: Steps at which to restart (integers > 0).
        period: Also restart every ``period`` steps (integer > 0).
        rewind_to: The base schedule's step to restart from (>= 0).

    Raises:
        ValueError: If ``restart_steps`` holds a non-positive or non-integer
            value, ``period`` is not a positive integer, ``rewind_to`` < 0, or
            ``schedule`` is neither callable nor a number.

    Example:
        >>> base = WarmupCosine(1e-3, decay_steps=200, warmup_steps=20)
        >>> lr = Rewinding(base, restart_steps=[300, 600, 900])
        >>> optimizer = keras.optimizers.Adam(lr)

    References:
        Renda, Frankle, Carbin. "Comparing Rewinding and Fine-tuning in Neural
        Network Pruning", ICLR 2020.
    """

    def __init__(
        self,
        schedule: Schedule | float,
        restart_steps: Sequence[int] | None = None,
        period: int | None = None,
        rewind_to: int = 0,
    ) -> None:
        if not callable(schedule) and (
            not isinstance(schedule, (int, float)) or isinstance(schedule, bool)
        ):
            raise ValueError(
                f"`schedule` must be a LearningRateSchedule, a step -> value callable or "
                f"a float, got {schedule!r}."
            )
        self.restart_steps, self.period, self.rewind_to = validate_restarts(
            restart_steps, period, rewind_to
        )
        self.schedule = schedule

    def __call__(self, step: Any) -> Any:
        if not callable(self.schedule):
            return ops.cast(self.schedule, "float32")
        rewound = rewound_step(step, self.restart_steps, self.period, self.rewind_to)
        return ops.cast(self.schedule(rewound), "float32")

    def get_config(self) -> dict[str, Any]:
        return {
            "schedule": serialize_schedule(self.schedule),
            "restart_steps": list(self.restart_steps),
            "period": self.period,
            "rewind_to": self.rewind_to,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Rewinding:
        config = dict(config)
        config["schedule"] = deserialize_schedule(config["schedule"])
        return cls(**config)
