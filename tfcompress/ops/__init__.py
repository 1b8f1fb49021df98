"""Numerical core: pure functions on ``keras.ops`` (any backend) and NumPy for offline work.

TensorFlow-only kernels live in :mod:`tfcompress.ops.tf`.
"""

from tfcompress.ops import lowrank as lowrank
from tfcompress.ops import tf
from tfcompress.ops.distillation import blend_losses as blend_losses
from tfcompress.ops.distillation import hint_loss as hint_loss
from tfcompress.ops.distillation import soft_target_loss as soft_target_loss
from tfcompress.ops.kmeans import assign_clusters, kmeans_1d

__all__: list[str] = [
    "assign_clusters",
    "blend_losses",
    "hint_loss",
    "kmeans_1d",
    "lowrank",
    "soft_target_loss",
    "tf",
]
