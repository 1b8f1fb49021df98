# ruff: noqa: I001, RUF022  (one import and one name per line: feature branches append theirs)
"""Keras layers you swap in: quantized, binary/ternary, low-rank and clustered."""

from tfcompress.layers.binary import BinaryConv2D
from tfcompress.layers.binary import BinaryDense
from tfcompress.layers.binary import BinaryDepthwiseConv2D
from tfcompress.layers.binary import WeightClip
from tfcompress.layers.binary import unipolar_inputs
from tfcompress.layers.quant_activation import QuantizeActivation
from tfcompress.layers.quant_conv import QuantConv1D
from tfcompress.layers.quant_conv import QuantConv2D
from tfcompress.layers.quant_conv import QuantDepthwiseConv2D
from tfcompress.layers.quant_dense import QuantDense
from tfcompress.layers.clustered import ClusteredConv1D
from tfcompress.layers.clustered import ClusteredConv2D
from tfcompress.layers.clustered import ClusteredDense
from tfcompress.layers.binary_packed import freeze_binary
from tfcompress.layers.binary_packed import unfreeze_binary
from tfcompress.layers.lowrank import LowRankDense
from tfcompress.layers.lowrank_conv import LowRankConv2D
from tfcompress.layers.quant_activation import QuantizeOutput

__all__: list[str] = [
    "BinaryConv2D",
    "BinaryDense",
    "BinaryDepthwiseConv2D",
    "WeightClip",
    "unipolar_inputs",
    "QuantizeActivation",
    "QuantConv1D",
    "QuantConv2D",
    "QuantDepthwiseConv2D",
    "QuantDense",
    "ClusteredConv1D",
    "ClusteredConv2D",
    "ClusteredDense",
    "freeze_binary",
    "unfreeze_binary",
    "LowRankDense",
    "LowRankConv2D",
    "QuantizeOutput",
]
