"""Packed storage formats.

* ``tfc.pack`` / ``tfc.unpack``: a compact, validated archive of a whole model
  (relative-index sparse, cluster indices + codebooks, Huffman coding).
* Binary (1 bit) and ternary (2 bits) kernels with scales.
"""

from tfcompress.binary.packed_file import PackedModelReport as PackedModelReport
from tfcompress.binary.packed_file import load_packed as load_packed
from tfcompress.binary.packed_file import save_packed as save_packed
from tfcompress.binary.store import PackedKernel as PackedKernel
from tfcompress.binary.store import pack_kernel as pack_kernel
from tfcompress.binary.store import unpack_kernel as unpack_kernel
from tfcompress.export.archive import PackFormatError as PackFormatError
from tfcompress.export.archive import PackReport as PackReport
from tfcompress.export.archive import dumps as dumps
from tfcompress.export.archive import loads as loads
from tfcompress.export.archive import pack as pack
from tfcompress.export.archive import unpack as unpack

__all__ = [
    "PackFormatError",
    "PackReport",
    "PackedKernel",
    "PackedModelReport",
    "dumps",
    "load_packed",
    "loads",
    "pack",
    "pack_kernel",
    "save_packed",
    "unpack",
    "unpack_kernel",
]
