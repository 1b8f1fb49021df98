# ruff: noqa: I001, RUF022  (one import and one name per line: feature branches append theirs)
"""Keras layers you swap in: quantized, binary/ternary, low-rank and clustered."""

from tfcompress.binary.layers import BinaryConv2D
from tfcompress.binary.layers import BinaryDense
from tfcompress.binary.layers import BinaryDepthwiseConv2D
from tfcompress.binary.layers import WeightClip
from tfcompress.binary.layers import unipolar_inputs
from tfcompress.quantization.activation import QuantizeActivation
from tfcompress.quantization.conv import QuantConv1D
from tfcompress.quantization.conv import QuantConv2D
from tfcompress.quantization.conv import QuantDepthwiseConv2D
from tfcompress.quantization.dense import QuantDense
from tfcompress.clustering.layers import ClusteredConv1D
from tfcompress.clustering.layers import ClusteredConv2D
from tfcompress.clustering.layers import ClusteredDense
from tfcompress.binary.packed import freeze_binary
from tfcompress.binary.packed import unfreeze_binary
from tfcompress.lowrank.dense import LowRankDense
from tfcompress.lowrank.conv import LowRankConv2D
from tfcompress.quantization.activation import QuantizeOutput
from tfcompress.quantization.conv_transpose import QuantConv2DTranspose
from tfcompress.quantization.separable_conv import QuantSeparableConv2D

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
    "QuantConv2DTranspose",
    "QuantSeparableConv2D",
]
