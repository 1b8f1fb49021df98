"""Callbacks for ``model.fit``: pruning, sparse training, distillation, schedules."""

from tfcompress.callbacks.pruning import GradualPruning, KeepSparsity
from tfcompress.callbacks.sparse_training import DynamicSparseTraining

__all__ = [
    "DynamicSparseTraining",
    "GradualPruning",
    "KeepSparsity",
]
