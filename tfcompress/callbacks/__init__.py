"""Callbacks for ``model.fit``: pruning, sparse training, distillation, schedules."""

from tfcompress.binary.flip_ratio import FlipRatio as FlipRatio
from tfcompress.distillation.teacher import DistillationTeacher as DistillationTeacher
from tfcompress.learning_rate.rewinding import LearningRateRewinding as LearningRateRewinding
from tfcompress.learning_rate.rewinding import mask_update_steps as mask_update_steps
from tfcompress.pruning.callbacks import GradualPruning as GradualPruning
from tfcompress.pruning.callbacks import KeepSparsity as KeepSparsity
from tfcompress.pruning.l0_constraint import L0MacsConstraint as L0MacsConstraint
from tfcompress.pruning.sparse_training import DynamicSparseTraining as DynamicSparseTraining
from tfcompress.quantization.irnet import IRNetSchedule as IRNetSchedule
from tfcompress.quantization.schedule import QuantizerSchedule as QuantizerSchedule

__all__ = [
    "DistillationTeacher",
    "DynamicSparseTraining",
    "FlipRatio",
    "GradualPruning",
    "IRNetSchedule",
    "KeepSparsity",
    "L0MacsConstraint",
    "LearningRateRewinding",
    "QuantizerSchedule",
    "mask_update_steps",
]
