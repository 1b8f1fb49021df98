"""TensorFlow-only kernels ("custom TF ops"), each with a pure-TensorFlow fallback.

Public face of :mod:`tfcompress.kernels.tf`.
"""

from tfcompress.kernels.tf import binary_conv2d as binary_conv2d
from tfcompress.kernels.tf import binary_conv2d_inference as binary_conv2d_inference
from tfcompress.kernels.tf import binary_dense_inference as binary_dense_inference
from tfcompress.kernels.tf import binary_matmul as binary_matmul
from tfcompress.kernels.tf import has_compiled_kernels as has_compiled_kernels
from tfcompress.kernels.tf import kernel_isa as kernel_isa
from tfcompress.kernels.tf import pack_bits as pack_bits
from tfcompress.kernels.tf import pack_conv2d_kernel as pack_conv2d_kernel
from tfcompress.kernels.tf import pack_dense_kernel as pack_dense_kernel
from tfcompress.kernels.tf import unpack_bits as unpack_bits

__all__ = [
    "binary_conv2d",
    "binary_conv2d_inference",
    "binary_dense_inference",
    "binary_matmul",
    "has_compiled_kernels",
    "kernel_isa",
    "pack_bits",
    "pack_conv2d_kernel",
    "pack_dense_kernel",
    "unpack_bits",
]
