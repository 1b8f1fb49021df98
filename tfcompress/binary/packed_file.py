"""A whole model in one ``.npz`` file, binary/ternary kernels packed 1 or 2 bits per weight.

:func:`save_packed` stores the binary/ternary kernels packed (see
:mod:`tfcompress.binary.store`), every other variable as float32, and the model's config
with the list of stored arrays. The file is replaced atomically. :func:`load_packed`
verifies every member's zip CRC-32 before decoding it, checks the header's list of arrays,
and raises :class:`~tfcompress.core.io.UnreadableFileError` for anything malformed.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
from pathlib import Path

import keras
import numpy as np

from tfcompress.binary.store import KIND_CODES, PackedKernel, pack_kernel, unpack_kernel
from tfcompress.core.io import UnreadableFileError, atomic_write

__all__ = ["PackedModelReport", "load_packed", "save_packed"]

_FORMAT = "tfcompress.packed/1"


@dataclasses.dataclass
class PackedModelReport:
    """What :func:`save_packed` wrote.

    Attributes:
        path: The file.
        file_bytes: Size of the file on disk (config and npz headers included).
        packed_bytes: Bytes of the packed kernels (bits + scales).
        float_bytes: Bytes of every other variable (float32).
        binarized_weights: Number of weights stored packed.
        bits_per_binarized_weight: ``8 * packed_bytes / binarized_weights``.
        layers: Names of the layers whose kernels were packed.
    """

    path: str
    file_bytes: int
    packed_bytes: int
    float_bytes: int
    binarized_weights: int
    bits_per_binarized_weight: float
    layers: list[str]


def _packable(layer) -> bool:
    return getattr(layer, "pack_kind", None) is not None and hasattr(layer, "quantized_kernel")


def _latent_from_packed(layer, packed: PackedKernel) -> np.ndarray:
    """A latent kernel whose quantization gives back the packed kernel."""
    q = layer.kernel_quantizer
    # Quantizers that derive scales from the weights get the scaled values;
    # unscaled or learned-scale ones get the bare signs.
    values = unpack_kernel(packed) if q.scaled and not q.stateful else packed.values()
    return values.astype(np.float32).reshape(tuple(layer._latent_kernel().shape))


def _leaf_layers(model: keras.Model):
    from tfcompress.core.rewrite import iter_leaf_layers

    return list(iter_leaf_layers(model))


def save_packed(model: keras.Model, path: str | os.PathLike) -> PackedModelReport:
    """Saves ``model`` with its binary/ternary kernels packed (1 or 2 bits each).

    Args:
        model: A built Sequential or Functional model (tfcompress layers
            must be registered, which importing tfcompress does).
        path: Output file (``.npz``; the suffix is added if missing).

    Returns:
        A :class:`PackedModelReport` with the sizes.

    Raises:
        ValueError: If the model is not built or a kernel that should be
            binary/ternary is not.
        OSError: If the file cannot be written (a previous file at ``path`` is
            then unchanged: the file is replaced atomically).

    Example:
        >>> report = save_packed(model, "model.npz")
        >>> restored = load_packed("model.npz")
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built; build it before saving")
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz")
    arrays: dict[str, np.ndarray] = {}
    packed_bytes = float_bytes = binarized = 0
    packed_layers: list[str] = []
    # Pack everything first: a bad kernel raises before a file is written.
    for index, (name, layer) in enumerate(_leaf_layers(model)):
        kernel_var = layer._latent_kernel() if _packable(layer) else None
        for v_index, variable in enumerate(layer.weights):
            key = f"{index}/{v_index}"
            if kernel_var is not None and variable is kernel_var:
                packed = pack_kernel(layer.quantized_kernel(), layer.pack_kind, name=name)
                arrays[key + "/bits"] = packed.bits
                arrays[key + "/pos"] = packed.positive_scales
                if packed.negative_scales is not None:
                    arrays[key + "/neg"] = packed.negative_scales
                arrays[key + "/meta"] = np.array(
                    [KIND_CODES[packed.kind], *packed.shape], dtype=np.int64
                )
                packed_bytes += packed.nbytes
                binarized += packed.num_weights
                packed_layers.append(name)
            else:
                value = np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)
                arrays[key] = value
                float_bytes += value.nbytes
    # "members" lets the loader notice a missing or extra array (the zip's CRCs cover contents).
    header = {"format": _FORMAT, "model": json.loads(model.to_json()), "members": sorted(arrays)}
    arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)
    return PackedModelReport(
        path=str(path),
        file_bytes=path.stat().st_size,
        packed_bytes=packed_bytes,
        float_bytes=float_bytes,
        binarized_weights=binarized,
        bits_per_binarized_weight=8 * packed_bytes / binarized if binarized else 0.0,
        layers=packed_layers,
    )


def load_packed(path: str | os.PathLike) -> keras.Model:
    """Loads a model written by :func:`save_packed`.

    Every zip member's CRC-32 is checked before its bytes are decoded, arrays
    are read without pickle, and every array is checked against the model its
    config describes before any weight is set.

    Args:
        path: The ``.npz`` file.

    Returns:
        The model with every variable restored; packed kernels unpack to
        exactly the kernels that were saved.

    Raises:
        UnreadableFileError: (a ``ValueError``) naming the file and what is
            wrong, if it is not a tfcompress packed model: not a zip archive,
            a CRC mismatch, a missing or extra array, a config that cannot be
            deserialized, an array that does not fit its variable.
        FileNotFoundError: If ``path`` does not exist.

    Example:
        >>> tfc.packing.save_packed(binary_model, "bnn.npz")
        >>> restored = tfc.packing.load_packed("bnn.npz")
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        return _load_packed(data, path)
    except UnreadableFileError:
        raise
    except (MemoryError, RecursionError) as error:
        raise UnreadableFileError(path, f"{type(error).__name__} while decoding") from None
    except Exception as error:
        # A failure no check anticipated: still this file's fault, still our error type.
        raise UnreadableFileError(
            path, f"cannot be decoded ({type(error).__name__}: {error})"
        ) from error


# A stored member is exactly as large as its data; deflate expands at most ~1032x.
_MAX_EXPANSION = 1100


def _read_members(data: bytes, path: Path) -> dict[str, np.ndarray]:
    if not data:
        raise UnreadableFileError(path, "the file is empty")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except Exception as error:  # BadZipFile, and struct/value errors on mangled records
        raise UnreadableFileError(path, f"not a valid .npz (zip) archive: {error}") from None
    arrays: dict[str, np.ndarray] = {}
    with archive:
        for info in infos:
            name = info.filename
            if not name.endswith(".npy") or name[:-4] in arrays:
                raise UnreadableFileError(path, f"unexpected or repeated zip member {name!r}")
            if info.file_size > _MAX_EXPANSION * len(data) + 1024:
                raise UnreadableFileError(
                    path, f"zip member {name!r} declares {info.file_size} bytes"
                )
            try:
                raw = archive.read(info)  # checks the member's CRC-32
            except Exception as error:  # BadZipFile, zlib.error, NotImplementedError, ...
                raise UnreadableFileError(path, f"zip member {name!r}: {error}") from None
            buffer = io.BytesIO(raw)
            try:
                array = np.lib.format.read_array(buffer, allow_pickle=False)
            except Exception as error:
                raise UnreadableFileError(
                    path, f"zip member {name!r} is not a valid .npy array: {error}"
                ) from None
            if buffer.tell() != len(raw):
                raise UnreadableFileError(path, f"zip member {name!r} has trailing bytes")
            arrays[name[:-4]] = array
    return arrays


def _read_header(arrays: dict[str, np.ndarray], path: Path) -> dict:
    raw = arrays.pop("__header__", None)
    if raw is None:
        raise UnreadableFileError(path, "not a tfcompress packed model (no header)")
    try:
        header = json.loads(np.asarray(raw, dtype=np.uint8).tobytes().decode("utf-8"))
    except (ValueError, TypeError, RecursionError) as error:
        raise UnreadableFileError(path, f"the header is not valid JSON: {error}") from None
    if not isinstance(header, dict):
        raise UnreadableFileError(path, "the header is not a JSON object")
    if header.get("format") != _FORMAT:
        raise UnreadableFileError(
            path, f"unknown format {header.get('format')!r}, expected {_FORMAT!r}"
        )
    members = header.get("members")
    if members is not None and sorted(arrays) != members:
        missing = sorted(set(map(str, members)) - set(arrays))
        extra = sorted(set(arrays) - set(map(str, members)))
        raise UnreadableFileError(
            path, f"arrays differ from the header's list (missing {missing}, extra {extra})"
        )
    return header


def _stored_kernel(arrays: dict, key: str, name: str, path: Path) -> PackedKernel:
    meta = arrays[key + "/meta"]
    kinds = {v: k for k, v in KIND_CODES.items()}
    if meta.dtype != np.int64 or meta.ndim != 1 or meta.size < 2 or int(meta[0]) not in kinds:
        raise UnreadableFileError(path, f"layer {name!r}: malformed packed-kernel metadata")
    kind, shape = kinds[int(meta[0])], tuple(int(d) for d in meta[1:])
    if min(shape) <= 0:
        raise UnreadableFileError(path, f"layer {name!r}: packed kernel shape {shape}")
    channels = shape[-1]
    row_bytes = -(-(int(np.prod(shape)) // channels) * KIND_CODES[kind] // 8)
    bits, pos = arrays.get(key + "/bits"), arrays.get(key + "/pos")
    neg = arrays.get(key + "/neg")
    if bits is None or bits.dtype != np.uint8 or bits.shape != (channels, row_bytes):
        raise UnreadableFileError(
            path, f"layer {name!r}: packed bits do not match the kernel shape {shape}"
        )
    for scales in (pos, neg):
        if scales is not None and (scales.dtype != np.float32 or scales.shape != (channels,)):
            raise UnreadableFileError(path, f"layer {name!r}: scales do not match {channels}")
    if pos is None:
        raise UnreadableFileError(path, f"layer {name!r}: packed kernel without scales")
    return PackedKernel(kind, shape, bits, pos, neg)


def _load_packed(data: bytes, path: Path) -> keras.Model:
    arrays = _read_members(data, path)
    header = _read_header(arrays, path)
    try:
        model = keras.models.model_from_json(json.dumps(header["model"]))
    except Exception as error:  # Keras raises many types on a bad config
        raise UnreadableFileError(
            path, f"the model config cannot be deserialized ({type(error).__name__}: {error})"
        ) from None
    used = set()
    assignments = []
    for index, (name, layer) in enumerate(_leaf_layers(model)):
        values = []
        for v_index, variable in enumerate(layer.weights):
            key = f"{index}/{v_index}"
            if key + "/meta" in arrays:
                if not _packable(layer):
                    raise UnreadableFileError(
                        path, f"layer {name!r} has a packed kernel but is not binary"
                    )
                packed = _stored_kernel(arrays, key, name, path)
                try:
                    value = _latent_from_packed(layer, packed)
                except ValueError as error:
                    raise UnreadableFileError(path, f"layer {name!r}: {error}") from None
                used.update(k for k in arrays if k.startswith(key + "/"))
            elif key in arrays:
                value = arrays[key]
                used.add(key)
                if value.dtype != np.float32:
                    raise UnreadableFileError(
                        path, f"layer {name!r} variable {v_index} is {value.dtype}, not float32"
                    )
            else:
                raise UnreadableFileError(
                    path, f"no value for variable {v_index} of layer {name!r}"
                )
            if tuple(value.shape) != tuple(variable.shape):
                raise UnreadableFileError(
                    path,
                    f"layer {name!r} variable {v_index} has shape {tuple(value.shape)}, "
                    f"the model expects {tuple(variable.shape)}",
                )
            values.append(value)
        if values:
            assignments.append((layer, values))
    if set(arrays) - used:
        raise UnreadableFileError(
            path, f"arrays the model does not use: {sorted(set(arrays) - used)}"
        )
    # Nothing is assigned before every array has been checked.
    for layer, values in assignments:
        layer.set_weights(values)
    return model
