# ruff: noqa: I001  (one import and one name per line: feature branches append theirs)
"""Keras layers you swap in: quantized, binary/ternary, low-rank and clustered."""

from tfcompress.layers.binary import BinaryConv2D
from tfcompress.layers.binary import BinaryDense
from tfcompress.layers.binary import BinaryDepthwiseConv2D
from tfcompress.layers.binary import WeightClip

__all__ = [
    "BinaryConv2D",
    "BinaryDense",
    "BinaryDepthwiseConv2D",
    "WeightClip",
]
