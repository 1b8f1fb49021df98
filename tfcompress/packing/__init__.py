"""``tfc.pack`` / ``tfc.unpack``: a compact, validated archive of a compressed model."""

from tfcompress.packing.format import PackFormatError, PackReport, dumps, loads, pack, unpack

__all__ = ["PackFormatError", "PackReport", "dumps", "loads", "pack", "unpack"]
