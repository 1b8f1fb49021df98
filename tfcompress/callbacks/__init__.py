"""Callbacks for ``model.fit``: pruning, sparse training, distillation, schedules."""

from tfcompress.callbacks.distillation import DistillationTeacher as DistillationTeacher
from tfcompress.callbacks.learning_rate import LearningRateRewinding as LearningRateRewinding
from tfcompress.callbacks.learning_rate import mask_update_steps as mask_update_steps

__all__: list[str] = [
    "DistillationTeacher",
    "LearningRateRewinding",
    "mask_update_steps",
]
