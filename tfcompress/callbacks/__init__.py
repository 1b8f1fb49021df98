"""Callbacks for ``model.fit``: pruning, sparse training, distillation, schedules."""

from tfcompress.callbacks.distillation import DistillationTeacher as DistillationTeacher
from tfcompress.callbacks.flip_ratio import FlipRatio
from tfcompress.callbacks.learning_rate import LearningRateRewinding as LearningRateRewinding
from tfcompress.callbacks.learning_rate import mask_update_steps as mask_update_steps
from tfcompress.callbacks.pruning import GradualPruning, KeepSparsity
from tfcompress.callbacks.sparse_training import DynamicSparseTraining

__all__ = [
    "DistillationTeacher",
    "DynamicSparseTraining",
    "FlipRatio",
    "GradualPruning",
    "KeepSparsity",
    "LearningRateRewinding",
    "mask_update_steps",
]
