# ruff: noqa: I001, RUF022  (one import and one name per line: feature branches append theirs)
"""Numerical core: pure functions on ``keras.ops`` (any backend) and NumPy for offline work.

TensorFlow-only kernels live in :mod:`tfcompress.ops.tf`.
"""

from tfcompress.ops.kmeans import kmeans_1d
from tfcompress.ops.kmeans import assign_clusters

__all__ = [
    "kmeans_1d",
    "assign_clusters",
]
