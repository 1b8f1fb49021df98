"""Keras layers you swap in: quantized, binary/ternary, low-rank and clustered."""

from tfcompress.layers.lowrank import LowRankDense
from tfcompress.layers.lowrank_conv import LowRankConv2D

__all__ = [
    "LowRankConv2D",
    "LowRankDense",
]
