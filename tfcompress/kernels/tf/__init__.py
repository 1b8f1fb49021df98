"""TensorFlow-only kernels ("custom TF ops"), each with a pure-TensorFlow fallback."""

from tfcompress.kernels.tf.binary_inference import (
    binary_conv2d_inference,
    binary_dense_inference,
    pack_conv2d_kernel,
    pack_dense_kernel,
)
from tfcompress.kernels.tf.binary_ops import (
    binary_conv2d,
    binary_matmul,
    has_compiled_kernels,
    kernel_isa,
    pack_bits,
    unpack_bits,
)

__all__: list[str] = [
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
