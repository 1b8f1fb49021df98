"""Numerical core: pure functions on ``keras.ops`` (any backend) and NumPy for offline work.

TensorFlow-only kernels live in :mod:`tfcompress.ops.tf`.
"""

from tfcompress.clustering.kmeans import assign_clusters, kmeans_1d
from tfcompress.distillation.losses import blend_losses as blend_losses
from tfcompress.distillation.losses import hint_loss as hint_loss
from tfcompress.distillation.losses import soft_target_loss as soft_target_loss
from tfcompress.lowrank import decompositions as lowrank
from tfcompress.ops import tf
from tfcompress.pruning import masks as pruning

__all__: list[str] = [
    "assign_clusters",
    "blend_losses",
    "hint_loss",
    "kmeans_1d",
    "lowrank",
    "pruning",
    "soft_target_loss",
    "tf",
]
