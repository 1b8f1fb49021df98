"""Sparsity schedules: pure, typed ``step -> sparsity`` callables."""

from __future__ import annotations

import keras

from tfcompress.pruning.masks import validate_sparsity

__all__ = ["ConstantSparsity", "PolynomialSparsity", "SparsitySchedule"]


def _check_steps(begin_step: int, end_step: int | None) -> None:
    if not isinstance(begin_step, int) or begin_step < 0:
        raise ValueError(f"begin_step must be an integer >= 0, got {begin_step!r}")
    if end_step is not None and (not isinstance(end_step, int) or end_step <= begin_step):
        raise ValueError(f"end_step must be an integer > begin_step={begin_step}, got {end_step!r}")


class SparsitySchedule:
    """Base class: ``schedule(step) -> sparsity`` in [0, 1), plus a config.

    Example:
        >>> schedule = tfc.schedules.PolynomialSparsity(0.8, begin_step=0, end_step=100)
        >>> round(float(schedule(50)), 3)   # Zhu & Gupta: 0.8 * (1 - (1 - 0.5) ** 3)
        0.7
    """

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict) -> SparsitySchedule:
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfcompress")
class PolynomialSparsity(SparsitySchedule):
    """Gradual pruning schedule of Zhu & Gupta: fast at first, slow near the target.

    ``s(t) = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0)) ** power`` for
    ``t0 <= t <= t1``; ``s_i`` before ``t0`` and ``s_f`` after ``t1``.

    Args:
        final_sparsity: ``s_f``, in [0, 1).
        begin_step: ``t0``, the first step that prunes.
        end_step: ``t1``, the step the final sparsity is reached (> begin_step).
        initial_sparsity: ``s_i``, in [0, 1) (default 0).
        power: Exponent (default 3).

    Returns:
        A callable ``step -> sparsity``.

    Raises:
        ValueError: For sparsities outside [0, 1), ``end_step <= begin_step``
            or ``power <= 0``.

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
        end_step: int = 1000,
        initial_sparsity: float = 0.0,
        power: float = 3.0,
    ):
        self.final_sparsity = validate_sparsity(final_sparsity, "final_sparsity")
        self.initial_sparsity = validate_sparsity(initial_sparsity, "initial_sparsity")
        _check_steps(begin_step, end_step)
        if not power > 0:
            raise ValueError(f"power must be > 0, got {power!r}")
        self.begin_step = begin_step
        self.end_step = end_step
        self.power = float(power)

    def __call__(self, step: int) -> float:
        if step <= self.begin_step:
            progress = 0.0
        elif step >= self.end_step:
            progress = 1.0
        else:
            progress = (step - self.begin_step) / (self.end_step - self.begin_step)
        return (
            self.final_sparsity
            + (self.initial_sparsity - self.final_sparsity) * (1.0 - progress) ** self.power
        )

    def get_config(self) -> dict:
        return {
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "initial_sparsity": self.initial_sparsity,
            "power": self.power,
        }


@keras.saving.register_keras_serializable(package="tfcompress")
class ConstantSparsity(SparsitySchedule):
    """One-shot schedule: ``sparsity`` from ``begin_step`` on (0 before).

    Args:
        sparsity: The target, in [0, 1).
        begin_step: The first step that prunes.

    Returns:
        A callable ``step -> sparsity``.

    Raises:
        ValueError: For a sparsity outside [0, 1) or a negative begin_step.

    Example:
        >>> ConstantSparsity(0.5, begin_step=10)(9), ConstantSparsity(0.5, begin_step=10)(10)
        (0.0, 0.5)
    """

    def __init__(self, sparsity: float, begin_step: int = 0):
        self.sparsity = validate_sparsity(sparsity)
        _check_steps(begin_step, None)
        self.begin_step = begin_step

    def __call__(self, step: int) -> float:
        return self.sparsity if step >= self.begin_step else 0.0

    def get_config(self) -> dict:
        return {"sparsity": self.sparsity, "begin_step": self.begin_step}
