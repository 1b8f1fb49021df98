"""Callbacks for ``model.fit``: pruning, sparse training, distillation, schedules."""

from tfcompress.callbacks.flip_ratio import FlipRatio

__all__ = [
    "FlipRatio",
]
