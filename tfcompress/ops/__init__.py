# ruff: noqa: I001  (one import per line: feature branches append theirs)
"""Numerical core: pure functions on ``keras.ops`` (any backend) and NumPy for offline work.

TensorFlow-only kernels live in :mod:`tfcompress.ops.tf`.
"""

from tfcompress.ops.kmeans import assign_clusters
from tfcompress.ops.kmeans import kmeans_1d

__all__ = [
    "assign_clusters",
    "kmeans_1d",
]
