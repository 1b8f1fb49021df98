"""The ``.tfcp`` archive: a Keras model in Deep Compression's storage format.

Layout of version 2 (all integers little-endian; full description in docs/pack_format.md)::

    b"TFCPACK\\0"  u16 version (2)  u16 flags (bit 0: config is zlib-compressed)
    u64 file_length (the whole archive, checksum included)
    u32 config_length   config (UTF-8 JSON of the Keras serialization of the model)
    u32 record_count    record_count x record
    record := u8 encoding  u8 dtype  u8 ndim  ndim x u32 dim  u64 payload_length  payload
    u32 CRC-32 of every byte before it

Version 1 (no ``file_length``, no checksum) still loads, with a warning.

One record per ``model.weights`` entry, in order. Encodings:

* ``RAW`` (0): the values' little-endian bytes.
* ``SPARSE`` (1): relative-index sparse, Deep Compression style: a Huffman
  stream of gaps (zeros skipped before each stored entry, at most a per-tensor
  limit <= 255; a longer run stores an explicit zero as filler), then the
  stored values' bytes.
* ``HUFFMAN`` (2): integer symbols (cluster indices), Huffman-coded.
* ``SPARSE_HUFFMAN`` (3): gaps as in ``SPARSE``, then the nonzero symbols
  Huffman-coded (clustered + pruned kernels: index 0 is the pruned zero).

The writer picks the smallest encoding per tensor and writes the file
atomically (:func:`tfcompress.core.io.atomic_write`). The reader checks the
length and the CRC-32 before decoding anything, then validates every
field against the bytes present before allocating (a tensor can never claim
more than 2048 elements per payload byte), decodes every record before it
builds anything, rebuilds the model with ``keras.saving`` in safe mode (no
pickle, no lambdas, only ``keras``/``tfcompress`` modules) after checking the
config's weight shapes without allocating them, and checks cluster indices
against their codebooks. Any malformed input raises :class:`PackFormatError`, an
:class:`~tfcompress.core.io.UnreadableFileError` naming the file and what is wrong.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import math
import os
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfcompress.core.io import UnreadableFileError, write_bytes
from tfcompress.export import huffman

__all__ = ["MAGIC", "VERSION", "PackFormatError", "PackReport", "dumps", "loads", "pack", "unpack"]

MAGIC = b"TFCPACK\x00"
VERSION = 2
READABLE_VERSIONS = (1, 2)
_HEADER_V1 = struct.Struct("<HHI")  # version, flags, config_length
_HEADER_V2 = struct.Struct("<HHQI")  # version, flags, file_length, config_length
_CRC = struct.Struct("<I")
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


def _bad(reason: str) -> PackFormatError:
    # Raised deep in the parser, which does not know the file; loads() adds the path.
    return PackFormatError(None, reason)


@dataclasses.dataclass
class PackReport:
    """What :func:`pack` wrote: total bytes and one ``(path, shape, encoding, bytes)`` per tensor."""

    path: str | None
    bytes: int
    config_bytes: int
    tensors: list[tuple[str, tuple[int, ...], str, int]]


# ---------------------------------------------------------------- writing


def _gaps(flat_nonzero: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Gap symbols and positions of stored entries, with fillers for long runs."""
    positions = np.flatnonzero(flat_nonzero)
    previous = np.concatenate([[-1], positions[:-1]])
    gaps = positions - previous - 1
    fillers = gaps // (max_gap + 1)
    if not fillers.any():
        return gaps, positions
    # Each filler is an explicit zero stored MAX_GAP + 1 positions on.
    count = fillers + 1
    starts = np.repeat(previous, count)
    step = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    entries = starts + (step + 1) * (max_gap + 1)
    last = np.cumsum(count) - 1
    entries[last] = positions
    out_gaps = np.full(entries.size, max_gap)
    out_gaps[last] = gaps - fillers * (max_gap + 1)
    return out_gaps, entries


def _encode_tensor(value: np.ndarray) -> tuple[int, bytes]:
    flat = value.reshape(-1)
    raw = flat.astype(flat.dtype.newbyteorder("<"), copy=False).tobytes()
    candidates = [(RAW, raw)]
    if flat.size and flat.dtype != np.bool_:
        # Zeros by value: a -0.0 (e.g. from kernel * mask) is stored as +0.0,
        # which compares equal and gives equal outputs.
        nonzero = flat != 0
        integer = np.issubdtype(flat.dtype, np.integer) and flat.min() >= 0
        top = int(flat.max()) + 1 if integer else 0
        integer = integer and top <= huffman.MAX_ALPHABET
        if integer:
            candidates.append((HUFFMAN, huffman.encode(flat.astype(np.int64), top)))
        if not nonzero.all():
            # The longest gap a symbol codes is a per-tensor choice (longer runs
            # get an explicit zero as filler); try a few, keep the smallest.
            for max_gap in GAP_CHOICES:
                gaps, entries = _gaps(nonzero, max_gap)
                gap_stream = huffman.encode(gaps, max_gap + 1)
                head = struct.pack("<Q", len(gap_stream)) + gap_stream
                stored = flat[entries]
                if integer:
                    symbols = huffman.encode(stored.astype(np.int64), top)
                    candidates.append((SPARSE_HUFFMAN, head + symbols))
                else:
                    values = stored.astype(stored.dtype.newbyteorder("<"), copy=False).tobytes()
                    candidates.append((SPARSE, head + values))
    return min(candidates, key=lambda c: len(c[1]))


def _dtype_code(dtype: np.dtype) -> int:
    code = DTYPE_CODES.get(np.dtype(dtype))
    if code is None:
        raise TypeError(
            f"cannot pack a variable of dtype {dtype}; supported: "
            f"{', '.join(str(d) for d in DTYPES.values())}"
        )
    return code


def dumps(model: keras.Model) -> tuple[bytes, PackReport]:
    """Serializes ``model`` to archive bytes; returns ``(bytes, report)``.

    Example:
        >>> data, report = tfc.packing.dumps(clustered_model)
        >>> restored = tfc.packing.loads(data)
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built")
    # unpack refuses classes from other modules (safety), so refuse them here,
    # before writing a file that could never be read back.
    for layer in [model, *model._flatten_layers(include_self=False, recursive=True)]:
        module = type(layer).__module__
        if module.split(".")[0] not in ALLOWED_MODULES:
            raise ValueError(
                f"layer {layer.name!r} is a {module}.{type(layer).__name__}; pack stores "
                f"models built from {' and '.join(ALLOWED_MODULES)} classes only (unpack "
                "refuses other modules for safety). Save it with model.save('model.keras')"
            )
    serialized = keras.saving.serialize_keras_object(model)
    serialized.pop("compile_config", None)  # unpack gives an uncompiled model
    text = json.dumps(serialized, separators=(",", ":"))
    config = zlib.compress(text.encode("utf-8"), 9)
    out = io.BytesIO()
    out.write(struct.pack("<I", len(model.weights)))
    tensors = []
    for variable in model.weights:
        value = np.asarray(keras.ops.convert_to_numpy(variable))
        code = _dtype_code(value.dtype)
        if value.ndim > MAX_NDIM:
            raise ValueError(f"variable {variable.path} has {value.ndim} > {MAX_NDIM} dims")
        encoding, payload = _encode_tensor(value)
        head = struct.pack("<BBB", encoding, code, value.ndim)
        head += struct.pack(f"<{value.ndim}I", *value.shape)
        out.write(head + struct.pack("<Q", len(payload)) + payload)
        tensors.append(
            (
                variable.path,
                tuple(value.shape),
                ENCODING_NAMES[encoding],
                len(head) + 8 + len(payload),
            )
        )
    body = config + out.getvalue()
    length = len(MAGIC) + _HEADER_V2.size + len(body) + _CRC.size
    data = MAGIC + _HEADER_V2.pack(VERSION, FLAG_ZLIB_CONFIG, length, len(config)) + body
    data += _CRC.pack(zlib.crc32(data))
    return data, PackReport(None, len(data), len(config), tensors)


def pack(model: keras.Model, path: str | os.PathLike) -> PackReport:
    """Writes ``model`` (config + weights) to a compact ``.tfcp`` archive.

    Pruned tensors are stored relative-index sparse, cluster indices
    Huffman-coded with their codebooks, everything else raw; the smallest
    encoding is chosen per tensor. :func:`unpack` gives back a model whose
    outputs are bit-for-bit equal. A CRC-32 over the whole file lets
    :func:`unpack` refuse a corrupted copy, and the file is replaced
    atomically: if the write fails, a previous file at ``path`` is unchanged.

    Args:
        model: A built Sequential or Functional Keras model whose layers are
            Keras or tfcompress classes.
        path: Output file.

    Returns:
        A :class:`PackReport` (bytes written, per-tensor encodings and sizes).

    Raises:
        TypeError: If ``model`` is not a Keras model or a variable's dtype is
            not supported.
        OSError: If the file cannot be written (``path`` is then unchanged).

    Example:
        >>> report = tfc.pack(clustered_model, "model.tfcp")
        >>> restored = tfc.unpack("model.tfcp")
    """
    data, report = dumps(model)
    write_bytes(path, data)
    report.path = str(path)
    return report


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
            raise _bad(
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
        raise _bad(f"{what}: payload too short for its gap stream length")
    (length,) = struct.unpack("<Q", payload[:8])
    if length > len(payload) - 8:
        raise _bad(f"{what}: gap stream length {length} exceeds the payload")
    return bytes(payload[8 : 8 + length]), payload[8 + length :]


def _decode_record(encoding: int, dtype: np.dtype, size: int, payload: memoryview, what: str):
    if encoding == RAW:
        if len(payload) != size * dtype.itemsize:
            raise _bad(f"{what}: {len(payload)} raw bytes for {size} values of {dtype}")
        return np.frombuffer(payload, dtype=dtype).copy()
    if encoding == HUFFMAN:
        if not np.issubdtype(dtype, np.integer):
            raise _bad(f"{what}: Huffman coding needs an integer dtype, not {dtype}")
        symbols = huffman.decode(bytes(payload))
        if symbols.size != size:
            raise _bad(f"{what}: {symbols.size} symbols for {size} values")
        return _cast_symbols(symbols, dtype, what)
    if encoding not in (SPARSE, SPARSE_HUFFMAN):
        raise _bad(f"{what}: unknown encoding {encoding}")
    gap_bytes, rest = _split_stream(payload, what)
    gaps = huffman.decode(gap_bytes)
    if gaps.size and gaps.max() > MAX_GAP:
        raise _bad(f"{what}: gap {gaps.max()} > {MAX_GAP}")
    positions = np.cumsum(gaps + 1) - 1
    if positions.size and positions[-1] >= size:
        raise _bad(f"{what}: sparse positions run past the {size} values")
    if encoding == SPARSE:
        if len(rest) != gaps.size * dtype.itemsize:
            raise _bad(f"{what}: {len(rest)} value bytes for {gaps.size} entries")
        values = np.frombuffer(rest, dtype=dtype)
    else:
        if not np.issubdtype(dtype, np.integer):
            raise _bad(f"{what}: Huffman coding needs an integer dtype, not {dtype}")
        values = _cast_symbols(huffman.decode(bytes(rest)), dtype, what)
        if values.size != gaps.size:
            raise _bad(f"{what}: {values.size} symbols for {gaps.size} entries")
    out = np.zeros(size, dtype=dtype)
    out[positions] = values
    return out


def _cast_symbols(symbols: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    if symbols.size and symbols.max() > np.iinfo(dtype).max:
        raise _bad(f"{what}: symbol {symbols.max()} does not fit {dtype}")
    return symbols.astype(dtype)


def _check_modules(node: Any, depth: int = 0) -> None:
    # Defence in depth on top of safe_mode: only Keras and tfcompress classes.
    if depth > 200:
        raise _bad("model config is nested too deeply")
    if isinstance(node, dict):
        module = node.get("module")
        if module is not None and (
            not isinstance(module, str) or module.split(".")[0] not in ALLOWED_MODULES
        ):
            raise _bad(
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
        raise _bad("the file is empty")
    if bytes(data[: len(MAGIC)]) != MAGIC[:size]:
        raise _bad("not a tfcompress archive (bad magic bytes)")
    if size < len(MAGIC) + 2:
        raise _bad(f"truncated at byte {size}: the header needs {len(MAGIC) + 2} bytes")
    (version,) = struct.unpack_from("<H", data, len(MAGIC))
    if version not in READABLE_VERSIONS:
        raise _bad(
            f"archive version {version} is not supported (this reader: "
            f"{', '.join(map(str, READABLE_VERSIONS))})"
        )
    header = _HEADER_V2 if version == 2 else _HEADER_V1
    end = len(MAGIC) + header.size
    if size < end:
        raise _bad(f"truncated at byte {size}: the version-{version} header needs {end} bytes")
    if version == 1:
        _, flags, config_length = header.unpack_from(data, len(MAGIC))
        reader = _Reader(data)
    else:
        _, flags, file_length, config_length = header.unpack_from(data, len(MAGIC))
        if size < file_length:
            raise _bad(
                f"truncated at byte {size}: the header declares {file_length} bytes "
                "(the file is cut short, or its header is corrupted)"
            )
        if size > file_length:
            raise _bad(
                f"{size - file_length} unexpected bytes after the declared end at byte "
                f"{file_length} (data appended, or the header is corrupted)"
            )
        if size < end + _CRC.size:
            raise _bad(f"truncated at byte {size}: no room for the checksum")
        (stored,) = _CRC.unpack_from(data, size - _CRC.size)
        computed = zlib.crc32(memoryview(data)[: size - _CRC.size])
        if stored != computed:
            raise _bad(
                f"checksum mismatch (stored CRC-32 {stored:#010x}, computed {computed:#010x}): "
                "the file is corrupted"
            )
        reader = _Reader(memoryview(data)[: size - _CRC.size])
    reader.pos = end
    return reader, version, flags, config_length


def _parse(data: bytes) -> tuple[dict, list[np.ndarray], int]:
    """The config, the tensors and the format version of archive bytes."""
    r, version, flags, config_length = _envelope(data)
    if flags & ~FLAG_ZLIB_CONFIG:
        raise _bad(f"unknown header flags {flags:#x}")
    raw_config = bytes(r.take(config_length, "model config"))
    try:
        if flags & FLAG_ZLIB_CONFIG:
            inflater = zlib.decompressobj()
            limit = MAX_CONFIG_EXPANSION * max(config_length, 1024)
            raw_config = inflater.decompress(raw_config, limit)
            if inflater.unconsumed_tail or not inflater.eof:
                raise _bad("model config is truncated or inflates too much")
        config = json.loads(raw_config.decode("utf-8"))
    except zlib.error as error:
        raise _bad(f"model config is not valid zlib data: {error}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise _bad(f"model config is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise _bad("model config is not a JSON object")
    _check_modules(config)
    config.pop("compile_config", None)
    (count,) = r.unpack("<I", "record count")
    if count > r.left // 12:  # every record takes at least 12 bytes
        raise _bad(f"record count {count} exceeds what {r.left} bytes can hold")
    tensors = []
    for i in range(count):
        what = f"record {i}"
        encoding, code, ndim = r.unpack("<BBB", what)
        if code not in DTYPES:
            raise _bad(f"{what}: unknown dtype code {code}")
        if ndim > MAX_NDIM:
            raise _bad(f"{what}: {ndim} dimensions > {MAX_NDIM}")
        shape = r.unpack(f"<{ndim}I", what)
        (length,) = r.unpack("<Q", what)
        payload = r.take(length, f"{what} payload")
        size = math.prod(shape)
        # Bounded expansion: at most 8 entries per byte, MAX_GAP + 1 values each.
        if size > 8 * (MAX_GAP + 1) * max(length, 1):
            raise _bad(f"{what}: shape {shape} is too large for {length} payload bytes")
        try:
            value = _decode_record(encoding, DTYPES[code], size, payload, what)
        except huffman.HuffmanError as error:
            raise _bad(f"{what}: {error}") from None
        tensors.append(value.reshape(shape))
    if r.left:
        raise _bad(f"{r.left} trailing bytes after the last record")
    return config, tensors, version


def _build(config: dict) -> keras.Model:
    try:
        with keras.saving.custom_object_scope({}):
            # Keras consumes parts of the config it is given: pass a copy.
            model = keras.saving.deserialize_keras_object(copy.deepcopy(config), safe_mode=True)
    except PackFormatError:
        raise
    except Exception as error:  # Keras raises many types on a bad config
        raise _bad(f"model config cannot be deserialized: {error}") from None
    if not isinstance(model, keras.Model):
        raise _bad(f"model config describes a {type(model).__name__}, not a model")
    return model


def _ghost_shapes(config: dict) -> tuple[list[tuple[int, ...]], list[str]]:
    """Variable shapes and dtypes of the model ``config`` describes, without allocating them.

    Inside a ``keras.StatelessScope`` variables are created uninitialised; we
    exit without initialising them and drop them from Keras' pending list, so a
    config that declares a huge layer costs no memory.
    """
    from keras.src.backend.common import global_state

    key = "uninitialized_variables"
    pending = global_state.get_global_attribute(key, [], set_to_default=True)
    before = len(pending)
    try:
        with keras.StatelessScope(initialize_variables=False):
            ghost = _build(config)
            shapes = [tuple(int(d) for d in v.shape) for v in ghost.weights]
            dtypes = [keras.backend.standardize_dtype(v.dtype) for v in ghost.weights]
    finally:
        pending = global_state.get_global_attribute(key, [], set_to_default=True)
        del pending[before:]
    return shapes, dtypes


def loads(data: bytes, *, path: str | os.PathLike | None = None) -> keras.Model:
    """Rebuilds a model from archive bytes (see :func:`unpack`).

    Args:
        data: The archive's bytes.
        path: Where the bytes came from, for error messages (optional).

    Returns:
        The model, as :func:`unpack` gives it.

    Raises:
        PackFormatError: An :class:`~tfcompress.core.io.UnreadableFileError`:
            the bytes are not a valid archive (see :func:`unpack`).

    Example:
        >>> restored = tfc.packing.loads(open("model.tfcp", "rb").read())
    """
    return _checked_loads(data, path, stacklevel=2)


def _checked_loads(data: bytes, path: str | os.PathLike | None, stacklevel: int) -> keras.Model:
    """:func:`_loads` with every failure mapped to a :class:`PackFormatError` naming ``path``."""
    source = None if path is None else os.fspath(path)
    try:
        model, version = _loads(bytes(data))
    except PackFormatError as error:
        if error.path == source:
            raise
        raise PackFormatError(source, error.reason) from None
    except (MemoryError, RecursionError) as error:
        raise PackFormatError(source, f"{type(error).__name__} while decoding") from None
    except Exception as error:
        # A failure no check above anticipated: still this file's fault, still our error type.
        raise PackFormatError(
            source, f"cannot be decoded ({type(error).__name__}: {error})"
        ) from error
    if version == 1:
        warnings.warn(
            f"{'archive' if source is None else repr(source)} is a version-1 .tfcp archive: it "
            "carries no checksum, so corruption cannot be detected; pack the model again to "
            "write a checksummed version-2 file",
            UserWarning,
            stacklevel=stacklevel + 1,
        )
    return model


def _loads(data: bytes) -> tuple[keras.Model, int]:
    import tfcompress.layers  # noqa: F401  (registers the tfcompress classes)

    config, tensors, version = _parse(data)
    # Build once with deferred variables (nothing allocated) to check the shapes.
    shapes, dtypes = _ghost_shapes(config)
    if len(shapes) != len(tensors):
        raise _bad(f"model has {len(shapes)} variables, archive has {len(tensors)}")
    for i, (shape, dtype, value) in enumerate(zip(shapes, dtypes, tensors)):
        if shape != value.shape or np.dtype(dtype) != value.dtype.newbyteorder("="):
            raise _bad(
                f"record {i}: {value.dtype}{list(value.shape)} does not match the model's "
                f"variable {dtype}{list(shape)}"
            )
    model = _build(config)
    for variable, value in zip(model.weights, tensors):
        variable.assign(value)
    for layer in model._flatten_layers(include_self=False):
        check = getattr(layer, "check_indices", None)
        if callable(check):
            try:
                check()
            except ValueError as error:
                raise _bad(str(error)) from None
    return model, version


def unpack(path: str | os.PathLike) -> keras.Model:
    """Reads an archive written by :func:`pack` and rebuilds the Keras model.

    Args:
        path: The ``.tfcp`` file.

    Returns:
        A built ``keras.Model`` (not compiled) whose outputs equal the packed
        model's exactly.

    Raises:
        PackFormatError: An :class:`~tfcompress.core.io.UnreadableFileError`
            (a ``ValueError``) naming the file and what is wrong, if it is not a
            valid archive: another format, an unsupported version, truncated,
            a checksum mismatch, a config that is unsafe or does not match the
            stored tensors, or cluster indices outside their codebook.
        FileNotFoundError: If ``path`` does not exist.

    Warns:
        UserWarning: For a version-1 archive, which carries no checksum.

    Example:
        >>> model = tfc.unpack("model.tfcp")
    """
    return _checked_loads(Path(path).read_bytes(), path, stacklevel=2)
