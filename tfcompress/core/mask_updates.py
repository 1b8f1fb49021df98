"""When pruning masks change: the protocols that pruning and learning-rate code share.

A sparsity schedule is the one source of its update steps; callbacks that drive
masks report them in the optimizer's count; ``LearningRateRewinding`` restarts its
schedule exactly there. These protocols live in ``core`` so that ``learning_rate``
needs nothing from ``pruning``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["MaskUpdateSchedule", "MaskUpdater"]


@runtime_checkable
class MaskUpdateSchedule(Protocol):
    """A schedule that says at which of its steps masks update (e.g. a SparsitySchedule)."""

    def is_update_step(self, step: int) -> bool:
        """Whether masks update before step ``step``."""
        ...

    def update_steps(self, total_steps: int) -> tuple[int, ...]:
        """The update steps in ``[0, total_steps]`` of a run of ``total_steps`` steps."""
        ...


@runtime_checkable
class MaskUpdater(Protocol):
    """A callback that changes masks during ``fit`` (GradualPruning, DynamicSparseTraining)."""

    def mask_update_steps(self, total_steps: int) -> tuple[int, ...]:
        """Optimizer steps in ``(0, total_steps]`` at which it changes masks in this fit."""
        ...
