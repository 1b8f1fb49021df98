# ruff: noqa: I001  (one import per line: feature branches append theirs)
"""Keras layers you swap in: quantized, binary/ternary, low-rank and clustered."""

from tfcompress.layers.clustered import ClusteredConv1D
from tfcompress.layers.clustered import ClusteredConv2D
from tfcompress.layers.clustered import ClusteredDense

__all__ = [
    "ClusteredConv1D",
    "ClusteredConv2D",
    "ClusteredDense",
]
