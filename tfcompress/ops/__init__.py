"""Numerical core: pure functions on ``keras.ops`` (any backend) and NumPy for offline work.

TensorFlow-only kernels live in :mod:`tfcompress.ops.tf`.
"""

from tfcompress.ops import lowrank

__all__ = [
    "lowrank",
]
