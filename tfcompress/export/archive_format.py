"""The ``.tfcp`` byte layout: constants, the error type, and the parser.

:func:`parse` turns archive bytes into ``(config, tensors, version)``: it checks the
length and the CRC-32 (version 2) before interpreting anything else, then validates every
field against the bytes present before allocating. Building the Keras model from the
result is :mod:`tfcompress.export.archive`'s job. Layout: docs/pack_format.md.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from typing import Any

import numpy as np

from tfcompress.core.io import UnreadableFileError
from tfcompress.export import huffman

__all__ = ["MAGIC", "READABLE_VERSIONS", "VERSION", "PackFormatError", "format_error", "parse"]

MAGIC = b"TFCPACK\x00"
VERSION = 2
READABLE_VERSIONS = (1, 2)
HEADER_V1 = struct.Struct("<HHI")  # version, flags, config_length
HEADER_V2 = struct.Struct("<HHQI")  # version, flags, file_length, config_length
CHECKSUM = struct.Struct("<I")
RAW, SPARSE, HUFFMAN, SPARSE_HUFFMAN = 0, 1, 2, 3
ENCODING_NAMES = {
    RAW: "raw",
    SPARSE: "sparse",
    HUFFMAN: "huffman",
    SPARSE_HUFFMAN: "sparse+huffman",
}
MAX_GAP = 255
GAP_CHOICES = (7, 15, 31, 63, 255)
MAX_NDIM = 8
DTYPES = {
    1: np.dtype("<f4"),
    2: np.dtype("<f2"),
    3: np.dtype("<f8"),
    4: np.dtype("<i4"),
    5: np.dtype("<i8"),
    6: np.dtype("i1"),
    7: np.dtype("u1"),
    8: np.dtype("?"),
}
DTYPE_CODES = {dt.newbyteorder("=") if dt.byteorder != "|" else dt: c for c, dt in DTYPES.items()}
ALLOWED_MODULES = ("keras", "tfcompress")
FLAG_ZLIB_CONFIG = 1
MAX_CONFIG_EXPANSION = 64  # a zlib'd JSON config inflates ~10x; refuse bombs


class PackFormatError(UnreadableFileError):
    """The bytes given to :func:`unpack` / :func:`loads` are not a valid archive.

    A subclass of :class:`~tfcompress.core.io.UnreadableFileError` (and so of ``ValueError``),
    with its ``path`` and ``reason`` attributes.
    """


def format_error(reason: str) -> PackFormatError:
    # Raised deep in the parser, which does not know the file; loads() adds the path.
    return PackFormatError(None, reason)


# ---------------------------------------------------------------- reading


class _Reader:
    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.pos = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int, what: str) -> memoryview:
        if size < 0 or size > self.left:
            raise format_error(
                f"truncated archive: {what} needs {size} bytes at offset {self.pos}, "
                f"{self.left} left"
            )
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))


def _split_stream(payload: memoryview, what: str) -> tuple[bytes, memoryview]:
    if len(payload) < 8:
        raise format_error(f"{what}: payload too short for its gap stream length")
    (length,) = struct.unpack("<Q", payload[:8])
    if length > len(payload) - 8:
        raise format_error(f"{what}: gap stream length {length} exceeds the payload")
    return bytes(payload[8 : 8 + length]), payload[8 + length :]


def _decode_record(encoding: int, dtype: np.dtype, size: int, payload: memoryview, what: str):
    if encoding == RAW:
        if len(payload) != size * dtype.itemsize:
            raise format_error(f"{what}: {len(payload)} raw bytes for {size} values of {dtype}")
        return np.frombuffer(payload, dtype=dtype).copy()
    if encoding == HUFFMAN:
        if not np.issubdtype(dtype, np.integer):
            raise format_error(f"{what}: Huffman coding needs an integer dtype, not {dtype}")
        symbols = huffman.decode(bytes(payload))
        if symbols.size != size:
            raise format_error(f"{what}: {symbols.size} symbols for {size} values")
        return _cast_symbols(symbols, dtype, what)
    if encoding not in (SPARSE, SPARSE_HUFFMAN):
        raise format_error(f"{what}: unknown encoding {encoding}")
    gap_bytes, rest = _split_stream(payload, what)
    gaps = huffman.decode(gap_bytes)
    if gaps.size and gaps.max() > MAX_GAP:
        raise format_error(f"{what}: gap {gaps.max()} > {MAX_GAP}")
    positions = np.cumsum(gaps + 1) - 1
    if positions.size and positions[-1] >= size:
        raise format_error(f"{what}: sparse positions run past the {size} values")
    if encoding == SPARSE:
        if len(rest) != gaps.size * dtype.itemsize:
            raise format_error(f"{what}: {len(rest)} value bytes for {gaps.size} entries")
        values = np.frombuffer(rest, dtype=dtype)
    else:
        if not np.issubdtype(dtype, np.integer):
            raise format_error(f"{what}: Huffman coding needs an integer dtype, not {dtype}")
        values = _cast_symbols(huffman.decode(bytes(rest)), dtype, what)
        if values.size != gaps.size:
            raise format_error(f"{what}: {values.size} symbols for {gaps.size} entries")
    out = np.zeros(size, dtype=dtype)
    out[positions] = values
    return out


def _cast_symbols(symbols: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    if symbols.size and symbols.max() > np.iinfo(dtype).max:
        raise format_error(f"{what}: symbol {symbols.max()} does not fit {dtype}")
    return symbols.astype(dtype)


def _check_modules(node: Any, depth: int = 0) -> None:
    # Defence in depth on top of safe_mode: only Keras and tfcompress classes.
    if depth > 200:
        raise format_error("model config is nested too deeply")
    if isinstance(node, dict):
        module = node.get("module")
        if module is not None and (
            not isinstance(module, str) or module.split(".")[0] not in ALLOWED_MODULES
        ):
            raise format_error(
                f"model config refers to module {module!r}; only {ALLOWED_MODULES} are allowed"
            )
        for value in node.values():
            _check_modules(value, depth + 1)
    elif isinstance(node, list):
        for value in node:
            _check_modules(value, depth + 1)


def _envelope(data: bytes) -> tuple[_Reader, int, int, int]:
    """Checks magic, version, length and checksum.

    Returns the reader (at the config), the version, the flags and the config's length.

    Nothing past the fixed header is interpreted before the CRC-32 matches.
    """
    size = len(data)
    if size == 0:
        raise format_error("the file is empty")
    if bytes(data[: len(MAGIC)]) != MAGIC[:size]:
        raise format_error("not a tfcompress archive (bad magic bytes)")
    if size < len(MAGIC) + 2:
        raise format_error(f"truncated at byte {size}: the header needs {len(MAGIC) + 2} bytes")
    (version,) = struct.unpack_from("<H", data, len(MAGIC))
    if version not in READABLE_VERSIONS:
        raise format_error(
            f"archive version {version} is not supported (this reader: "
            f"{', '.join(map(str, READABLE_VERSIONS))})"
        )
    header = HEADER_V2 if version == 2 else HEADER_V1
    end = len(MAGIC) + header.size
    if size < end:
        raise format_error(
            f"truncated at byte {size}: the version-{version} header needs {end} bytes"
        )
    if version == 1:
        _, flags, config_length = header.unpack_from(data, len(MAGIC))
        reader = _Reader(data)
    else:
        _, flags, file_length, config_length = header.unpack_from(data, len(MAGIC))
        if size < file_length:
            raise format_error(
                f"truncated at byte {size}: the header declares {file_length} bytes "
                "(the file is cut short, or its header is corrupted)"
            )
        if size > file_length:
            raise format_error(
                f"{size - file_length} unexpected bytes after the declared end at byte "
                f"{file_length} (data appended, or the header is corrupted)"
            )
        if size < end + CHECKSUM.size:
            raise format_error(f"truncated at byte {size}: no room for the checksum")
        (stored,) = CHECKSUM.unpack_from(data, size - CHECKSUM.size)
        computed = zlib.crc32(memoryview(data)[: size - CHECKSUM.size])
        if stored != computed:
            raise format_error(
                f"checksum mismatch (stored CRC-32 {stored:#010x}, computed {computed:#010x}): "
                "the file is corrupted"
            )
        reader = _Reader(memoryview(data)[: size - CHECKSUM.size])
    reader.pos = end
    return reader, version, flags, config_length


def parse(data: bytes) -> tuple[dict, list[np.ndarray], int]:
    """The config, the tensors and the format version of archive bytes."""
    r, version, flags, config_length = _envelope(data)
    if flags & ~FLAG_ZLIB_CONFIG:
        raise format_error(f"unknown header flags {flags:#x}")
    raw_config = bytes(r.take(config_length, "model config"))
    try:
        if flags & FLAG_ZLIB_CONFIG:
            inflater = zlib.decompressobj()
            limit = MAX_CONFIG_EXPANSION * max(config_length, 1024)
            raw_config = inflater.decompress(raw_config, limit)
            if inflater.unconsumed_tail or not inflater.eof:
                raise format_error("model config is truncated or inflates too much")
        config = json.loads(raw_config.decode("utf-8"))
    except zlib.error as error:
        raise format_error(f"model config is not valid zlib data: {error}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise format_error(f"model config is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise format_error("model config is not a JSON object")
    _check_modules(config)
    config.pop("compile_config", None)
    (count,) = r.unpack("<I", "record count")
    if count > r.left // 12:  # every record takes at least 12 bytes
        raise format_error(f"record count {count} exceeds what {r.left} bytes can hold")
    tensors = []
    for i in range(count):
        what = f"record {i}"
        encoding, code, ndim = r.unpack("<BBB", what)
        if code not in DTYPES:
            raise format_error(f"{what}: unknown dtype code {code}")
        if ndim > MAX_NDIM:
            raise format_error(f"{what}: {ndim} dimensions > {MAX_NDIM}")
        shape = r.unpack(f"<{ndim}I", what)
        (length,) = r.unpack("<Q", what)
        payload = r.take(length, f"{what} payload")
        size = math.prod(shape)
        # Bounded expansion: at most 8 entries per byte, MAX_GAP + 1 values each.
        if size > 8 * (MAX_GAP + 1) * max(length, 1):
            raise format_error(f"{what}: shape {shape} is too large for {length} payload bytes")
        try:
            value = _decode_record(encoding, DTYPES[code], size, payload, what)
        except huffman.HuffmanError as error:
            raise format_error(f"{what}: {error}") from None
        tensors.append(value.reshape(shape))
    if r.left:
        raise format_error(f"{r.left} trailing bytes after the last record")
    return config, tensors, version
