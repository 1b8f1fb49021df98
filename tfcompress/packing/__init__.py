# ruff: noqa: I001, RUF022  (one import and one name per line: feature branches append theirs)
"""Packed storage formats.

* ``tfc.pack`` / ``tfc.unpack``: a compact, validated archive of a whole model
  (relative-index sparse, cluster indices + codebooks, Huffman coding).
* Binary (1 bit) and ternary (2 bits) kernels with scales.
"""

from tfcompress.packing.binary_store import PackedKernel
from tfcompress.packing.binary_store import PackedModelReport
from tfcompress.packing.binary_store import load_packed
from tfcompress.packing.binary_store import pack_kernel
from tfcompress.packing.binary_store import save_packed
from tfcompress.packing.binary_store import unpack_kernel
from tfcompress.packing.format import PackFormatError
from tfcompress.packing.format import PackReport
from tfcompress.packing.format import dumps
from tfcompress.packing.format import loads
from tfcompress.packing.format import pack
from tfcompress.packing.format import unpack

__all__ = [
    "PackedKernel",
    "PackedModelReport",
    "load_packed",
    "pack_kernel",
    "save_packed",
    "unpack_kernel",
    "PackFormatError",
    "PackReport",
    "dumps",
    "loads",
    "pack",
    "unpack",
]
