"""Sparsity schedules: ``step -> sparsity`` and the steps at which masks update.

A schedule is the one place that says when masks change. Steps are counted by the
pruning callback from its own start (0 before its first train step), not by the
optimizer. ``GradualPruning``, ``DynamicSparseTraining`` and
``LearningRateRewinding`` all ask the schedule (:meth:`SparsitySchedule.is_update_step`,
:meth:`SparsitySchedule.update_steps`), and ``end_step=None`` is resolved from the
run's length by :meth:`SparsitySchedule.resolved` only.

Update rule: with ``frequency=None`` masks update once, at ``begin_step``; otherwise at
``begin_step + k * frequency`` up to ``end_step``, and at ``end_step`` itself when
the schedule still changes there (a polynomial schedule reaches its target there,
even off the frequency grid).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import keras

from tfcompress.pruning.validation import check_fraction, check_int, check_positive

__all__ = ["ConstantSparsity", "PolynomialSparsity", "SparsitySchedule"]


def _check_steps(begin_step: Any, end_step: Any, frequency: Any) -> tuple[int, Any, Any]:
    begin = check_int("begin_step", begin_step, minimum=0)
    end = check_int("end_step", end_step, minimum=begin + 1, none_ok=True)
    return begin, end, check_int("frequency", frequency, minimum=1, none_ok=True)


class SparsitySchedule:
    """Base class: ``schedule(step) -> sparsity`` in [0, 1), its update steps, a config.

    Attributes:
        begin_step: First update step.
        end_step: Last step of the schedule; None until :meth:`resolved` fixes it
            from the run's length (``end_fraction`` of the steps after ``begin_step``).
        frequency: Steps between updates; None: a single update at ``begin_step``.
        end_fraction: Where ``end_step=None`` ends, as a fraction of the run.
        updates_at_end: Whether ``end_step`` itself is an update step.

    Example:
        >>> schedule = tfc.schedules.PolynomialSparsity(0.8, begin_step=0, end_step=100,
        ...                                             frequency=30)
        >>> round(float(schedule(50)), 3), schedule.update_steps(200)
        (0.7, (30, 60, 90, 100))
    """

    begin_step: int = 0
    end_step: int | None = None
    frequency: int | None = None
    end_fraction: float = 2.0 / 3.0
    updates_at_end: bool = True

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def resolved(self, total_steps: int) -> SparsitySchedule:
        """This schedule with ``end_step`` fixed for a run of ``total_steps`` steps.

        Returns ``self`` when nothing needs resolving (a given ``end_step``, or a
        single update).

        Raises:
            ValueError: When ``end_step`` is None and ``total_steps`` leaves no
                room after ``begin_step``.
        """
        if self.end_step is not None or self.frequency is None:
            return self
        total = check_int("total_steps", total_steps, minimum=0)
        if total <= self.begin_step + 1:
            raise ValueError(
                f"end_step=None needs a run longer than begin_step={self.begin_step} + 1 "
                f"steps, got {total} steps; pass end_step"
            )
        fixed = copy.copy(self)
        fixed.end_step = self.begin_step + max(
            1, round(self.end_fraction * (total - self.begin_step))
        )
        return fixed

    def is_update_step(self, step: int) -> bool:
        """Whether masks update before train step ``step`` (after ``step`` steps)."""
        if step < self.begin_step:
            return False
        if self.frequency is None:
            return step == self.begin_step
        end = self.end_step
        if end is not None:
            if step == end:
                return self.updates_at_end
            if step > end:
                return False
        return (step - self.begin_step) % self.frequency == 0

    def update_steps(self, total_steps: int) -> tuple[int, ...]:
        """The update steps in ``[0, total_steps]`` of a run of ``total_steps`` steps.

        Step ``total_steps`` counts: masks due then are applied right after the last step.
        """
        schedule = self.resolved(total_steps)
        return tuple(s for s in range(total_steps + 1) if schedule.is_update_step(s))

    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict) -> SparsitySchedule:
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfcompress")
class PolynomialSparsity(SparsitySchedule):
    """Gradual pruning schedule of Zhu & Gupta: fast at first, slow near the target.

    ``s(t) = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0)) ** power`` for
    ``t0 <= t <= t1``; ``s_i`` before ``t0`` and exactly ``s_f`` from ``t1`` on.
    Masks update every ``frequency`` steps from ``t0`` and at ``t1`` (not at ``t0``
    itself when ``s_i = 0``: nothing is pruned there).

    Args:
        final_sparsity: ``s_f``, in [0, 1).
        begin_step: ``t0``, the first update step.
        end_step: ``t1``, the step the final sparsity is reached (> begin_step);
            None: two thirds of the run after ``begin_step`` (see :meth:`resolved`).
        initial_sparsity: ``s_i``, in [0, 1) (default 0).
        power: Exponent (default 3).
        frequency: Steps between mask updates (default 100).

    Returns:
        A callable ``step -> sparsity``.

    Raises:
        ValueError: For sparsities outside [0, 1), ``end_step <= begin_step``,
            ``power <= 0``, ``frequency < 1`` or any of them given as a string.

    Example:
        >>> schedule = PolynomialSparsity(0.8, begin_step=0, end_step=100)
        >>> round(schedule(50), 3)
        0.7

    References:
        Zhu, Gupta. "To prune, or not to prune: exploring the efficacy of
        pruning for model compression", 2017.
    """

    def __init__(
        self,
        final_sparsity: float,
        begin_step: int = 0,
        end_step: int | None = 1000,
        initial_sparsity: float = 0.0,
        power: float = 3.0,
        frequency: int = 100,
    ):
        self.final_sparsity = check_fraction("final_sparsity", final_sparsity)
        self.initial_sparsity = check_fraction("initial_sparsity", initial_sparsity)
        self.begin_step, self.end_step, self.frequency = _check_steps(
            begin_step, end_step, check_int("frequency", frequency, minimum=1)
        )
        self.power = check_positive("power", power)

    def __call__(self, step: int) -> float:
        if self.end_step is None:
            raise ValueError(
                "PolynomialSparsity(end_step=None) has no value before the run's length is "
                "known; use schedule.resolved(total_steps)"
            )
        if step <= self.begin_step:
            progress = 0.0
        elif step >= self.end_step:
            return self.final_sparsity  # exactly the target from end_step on
        else:
            progress = (step - self.begin_step) / (self.end_step - self.begin_step)
        return (
            self.final_sparsity
            + (self.initial_sparsity - self.final_sparsity) * (1.0 - progress) ** self.power
        )

    def is_update_step(self, step: int) -> bool:
        # At begin_step the sparsity is still initial_sparsity: from 0 nothing changes.
        if step == self.begin_step and self.initial_sparsity == 0.0:
            return False
        return super().is_update_step(step)

    def get_config(self) -> dict:
        return {
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "initial_sparsity": self.initial_sparsity,
            "power": self.power,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="tfcompress")
class ConstantSparsity(SparsitySchedule):
    """``sparsity`` from ``begin_step`` on (0 before).

    One-shot by default: masks update once, at ``begin_step``. With ``frequency``
    masks are recomputed at the same sparsity every ``frequency`` steps from
    ``begin_step`` until (not at) ``end_step`` -- the cadence of dynamic sparse
    training, where ``end_step=None`` means three quarters of the run.

    Args:
        sparsity: The target, in [0, 1).
        begin_step: The first (or only) update step.
        end_step: Where periodic updates stop (> begin_step), or None.
        frequency: Steps between updates; None: a single update.

    Returns:
        A callable ``step -> sparsity``.

    Raises:
        ValueError: For a sparsity outside [0, 1), a negative begin_step,
            ``end_step <= begin_step``, ``frequency < 1``, or a string for any.

    Example:
        >>> ConstantSparsity(0.5, begin_step=10)(9), ConstantSparsity(0.5, begin_step=10)(10)
        (0.0, 0.5)
    """

    end_fraction = 0.75
    updates_at_end = False

    def __init__(
        self,
        sparsity: float,
        begin_step: int = 0,
        end_step: int | None = None,
        frequency: int | None = None,
    ):
        self.sparsity = check_fraction("sparsity", sparsity)
        self.begin_step, self.end_step, self.frequency = _check_steps(
            begin_step, end_step, frequency
        )

    def __call__(self, step: int) -> float:
        return self.sparsity if step >= self.begin_step else 0.0

    def get_config(self) -> dict:
        return {
            "sparsity": self.sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


class FunctionSparsity(SparsitySchedule):
    """A plain ``step -> sparsity`` callable with the update steps of a polynomial schedule.

    Masks update every ``frequency`` steps from ``begin_step`` to ``end_step``
    (and at it), or forever when ``end_step`` is None.
    """

    def __init__(
        self,
        function: Callable[[int], float],
        begin_step: int = 0,
        end_step: int | None = None,
        frequency: int = 100,
    ):
        self.function = function
        self.begin_step, self.end_step, self.frequency = _check_steps(
            begin_step, end_step, check_int("frequency", frequency, minimum=1)
        )

    def resolved(self, total_steps: int) -> SparsitySchedule:
        return self  # None means: no end

    def __call__(self, step: int) -> float:
        return float(self.function(step))

    def get_config(self) -> dict:
        return {
            "function": keras.saving.serialize_keras_object(self.function),
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }
