"""Keras layers you swap in: quantized, binary/ternary, low-rank, clustered, structured
(circulant, Toeplitz) and transferred filters."""

from tfcompress.binary.layers import BinaryConv2D as BinaryConv2D
from tfcompress.binary.layers import BinaryDense as BinaryDense
from tfcompress.binary.layers import BinaryDepthwiseConv2D as BinaryDepthwiseConv2D
from tfcompress.binary.layers import WeightClip as WeightClip
from tfcompress.binary.layers import unipolar_inputs as unipolar_inputs
from tfcompress.binary.packed import freeze_binary as freeze_binary
from tfcompress.binary.packed import unfreeze_binary as unfreeze_binary
from tfcompress.clustering.layers import ClusteredConv1D as ClusteredConv1D
from tfcompress.clustering.layers import ClusteredConv2D as ClusteredConv2D
from tfcompress.clustering.layers import ClusteredDense as ClusteredDense
from tfcompress.compact.transferred import TransferredConv2D as TransferredConv2D
from tfcompress.lowrank.conv import LowRankConv2D as LowRankConv2D
from tfcompress.lowrank.dense import LowRankDense as LowRankDense
from tfcompress.quantization.activation import QuantizeActivation as QuantizeActivation
from tfcompress.quantization.activation import QuantizeOutput as QuantizeOutput
from tfcompress.quantization.conv import QuantConv1D as QuantConv1D
from tfcompress.quantization.conv import QuantConv2D as QuantConv2D
from tfcompress.quantization.conv import QuantDepthwiseConv2D as QuantDepthwiseConv2D
from tfcompress.quantization.conv_transpose import QuantConv2DTranspose as QuantConv2DTranspose
from tfcompress.quantization.dense import QuantDense as QuantDense
from tfcompress.quantization.separable_conv import QuantSeparableConv2D as QuantSeparableConv2D
from tfcompress.structured.circulant import CirculantDense as CirculantDense
from tfcompress.structured.toeplitz import ToeplitzDense as ToeplitzDense

__all__ = [
    "BinaryConv2D",
    "BinaryDense",
    "BinaryDepthwiseConv2D",
    "CirculantDense",
    "ClusteredConv1D",
    "ClusteredConv2D",
    "ClusteredDense",
    "LowRankConv2D",
    "LowRankDense",
    "QuantConv1D",
    "QuantConv2D",
    "QuantConv2DTranspose",
    "QuantDense",
    "QuantDepthwiseConv2D",
    "QuantSeparableConv2D",
    "QuantizeActivation",
    "QuantizeOutput",
    "ToeplitzDense",
    "TransferredConv2D",
    "WeightClip",
    "freeze_binary",
    "unfreeze_binary",
    "unipolar_inputs",
]
