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
import os
import struct
import warnings
import zlib
from pathlib import Path

import keras
import numpy as np

from tfcompress.core.io import write_bytes
from tfcompress.export import huffman
from tfcompress.export.archive_format import (
    ALLOWED_MODULES,
    CHECKSUM,
    DTYPE_CODES,
    DTYPES,
    ENCODING_NAMES,
    FLAG_ZLIB_CONFIG,
    GAP_CHOICES,
    HEADER_V2,
    HUFFMAN,
    MAGIC,
    MAX_NDIM,
    RAW,
    SPARSE,
    SPARSE_HUFFMAN,
    VERSION,
    PackFormatError,
    format_error,
    parse,
)

__all__ = ["MAGIC", "VERSION", "PackFormatError", "PackReport", "dumps", "loads", "pack", "unpack"]


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
    length = len(MAGIC) + HEADER_V2.size + len(body) + CHECKSUM.size
    data = MAGIC + HEADER_V2.pack(VERSION, FLAG_ZLIB_CONFIG, length, len(config)) + body
    data += CHECKSUM.pack(zlib.crc32(data))
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


def _build(config: dict) -> keras.Model:
    try:
        with keras.saving.custom_object_scope({}):
            # Keras consumes parts of the config it is given: pass a copy.
            model = keras.saving.deserialize_keras_object(copy.deepcopy(config), safe_mode=True)
    except PackFormatError:
        raise
    except Exception as error:  # Keras raises many types on a bad config
        raise format_error(f"model config cannot be deserialized: {error}") from None
    if not isinstance(model, keras.Model):
        raise format_error(f"model config describes a {type(model).__name__}, not a model")
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

    config, tensors, version = parse(data)
    # Build once with deferred variables (nothing allocated) to check the shapes.
    shapes, dtypes = _ghost_shapes(config)
    if len(shapes) != len(tensors):
        raise format_error(f"model has {len(shapes)} variables, archive has {len(tensors)}")
    for i, (shape, dtype, value) in enumerate(zip(shapes, dtypes, tensors)):
        if shape != value.shape or np.dtype(dtype) != value.dtype.newbyteorder("="):
            raise format_error(
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
                raise format_error(str(error)) from None
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
