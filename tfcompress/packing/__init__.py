# ruff: noqa: I001, RUF022  (one import and one name per line: feature branches append theirs)
"""Packed storage formats.

* ``tfc.pack`` / ``tfc.unpack``: a compact, validated archive of a whole model
  (relative-index sparse, cluster indices + codebooks, Huffman coding).
* Binary (1 bit) and ternary (2 bits) kernels with scales.
"""

from tfcompress.binary.store import PackedKernel
from tfcompress.binary.packed_file import PackedModelReport
from tfcompress.binary.packed_file import load_packed
from tfcompress.binary.store import pack_kernel
from tfcompress.binary.packed_file import save_packed
from tfcompress.binary.store import unpack_kernel
from tfcompress.export.archive import PackFormatError
from tfcompress.export.archive import PackReport
from tfcompress.export.archive import dumps
from tfcompress.export.archive import loads
from tfcompress.export.archive import pack
from tfcompress.export.archive import unpack

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
