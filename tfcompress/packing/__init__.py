"""Packed storage formats: binary (1 bit) and ternary (2 bits) kernels with scales."""

from tfcompress.packing.binary_store import PackedKernel
from tfcompress.packing.binary_store import PackedModelReport
from tfcompress.packing.binary_store import load_packed
from tfcompress.packing.binary_store import pack_kernel
from tfcompress.packing.binary_store import save_packed
from tfcompress.packing.binary_store import unpack_kernel

__all__ = [
    "PackedKernel",
    "PackedModelReport",
    "load_packed",
    "pack_kernel",
    "save_packed",
    "unpack_kernel",
]
