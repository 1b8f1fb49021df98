"""Packed storage formats: binary (1 bit) and ternary (2 bits) kernels with scales."""

from tfcompress.packing.binary_store import (
    PackedKernel,
    PackedModelReport,
    load_packed,
    pack_kernel,
    save_packed,
    unpack_kernel,
)

__all__ = [
    "PackedKernel",
    "PackedModelReport",
    "load_packed",
    "pack_kernel",
    "save_packed",
    "unpack_kernel",
]
