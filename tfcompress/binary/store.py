"""Packed storage of binary (1 bit) and ternary (2 bits) kernels with per-channel scales.

A binary kernel is ``s * scale_c`` with ``s`` in {-1, +1}; a ternary kernel
is ``+p_c``, ``0`` or ``-n_c`` per output channel ``c`` (TTQ has ``p != n``).
:func:`pack_kernel` checks that a kernel really has that form (and says where
it does not), then stores the signs as bits, one row of bytes per output
channel (the layout XNOR-popcount kernels read), plus float32 scales.
:func:`unpack_kernel` gives back the identical float32 array.

:func:`tfcompress.binary.packed_file.save_packed` stores a whole model this way.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["PackedKernel", "pack_kernel", "split_scales", "unpack_kernel"]

KIND_CODES = {"binary": 1, "ternary": 2}


def _check_kind(kind: str | None) -> int:
    if kind not in KIND_CODES:
        raise ValueError(f"kind must be one of {sorted(KIND_CODES)}, got {kind!r}")
    return KIND_CODES[kind]


def _channel_scales(kernel: np.ndarray, sign: int, name: str, kind: str) -> np.ndarray:
    """Per channel, the single magnitude of the entries with that sign (0 if none)."""
    picked = np.where(np.sign(kernel) == sign, np.abs(kernel), np.nan)
    with np.errstate(all="ignore"):
        high = np.nanmax(np.where(np.isnan(picked), -np.inf, picked), axis=0)
        low = np.nanmin(np.where(np.isnan(picked), np.inf, picked), axis=0)
    present = np.isfinite(high)
    bad = np.flatnonzero(present & (high != low))
    if bad.size:
        c = int(bad[0])
        raise ValueError(
            f"{name}: kernel is not {kind}: output channel {c} has "
            f"{'positive' if sign > 0 else 'negative'} values of different magnitudes "
            f"(from {float(low[c])} to {float(high[c])}); expected one magnitude per channel and sign"
        )
    return np.where(present, high, 0.0).astype(np.float32)


def split_scales(
    kernel: np.ndarray, kind: str, *, name: str = "kernel"
) -> tuple[np.ndarray, np.ndarray]:
    """Splits a binary/ternary kernel into int8 values and per-channel scales.

    Args:
        kernel: A float array, last axis = output channels.
        kind: ``"binary"`` or ``"ternary"``.
        name: Names the kernel in error messages.

    Returns:
        ``(values, scales)``: int8 values in {-1, +1} (binary) or {-1, 0, +1}
        (ternary), and float32 scales of shape ``(channels,)`` such that
        ``values * scales == kernel``. Asymmetric ternary kernels (TTQ) are
        not representable by one scale: use :func:`pack_kernel`.

    Raises:
        ValueError: If the kernel is not of that form.
    """
    packed = pack_kernel(kernel, kind, name=name)
    if packed.negative_scales is not None:
        raise ValueError(f"{name}: positive and negative scales differ; use pack_kernel")
    values = packed.values()
    return values, packed.positive_scales


@dataclasses.dataclass
class PackedKernel:
    """A kernel packed 1 bit (binary) or 2 bits (ternary) per weight.

    Attributes:
        kind: ``"binary"`` or ``"ternary"``.
        shape: The kernel's shape (last axis = output channels).
        bits: uint8 array ``(channels, bytes_per_channel)``; each row holds
            one output channel's weights in C order of the other axes,
            least significant bit first. Binary: bit 1 = +1. Ternary: 2-bit
            codes 0 (zero), 1 (+1), 2 (-1).
        positive_scales: float32 ``(channels,)``: the magnitude of +1 (and of
            -1 when ``negative_scales`` is None).
        negative_scales: float32 ``(channels,)`` or None (symmetric).
    """

    kind: str
    shape: tuple[int, ...]
    bits: np.ndarray
    positive_scales: np.ndarray
    negative_scales: np.ndarray | None = None

    @property
    def num_weights(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """Stored bytes: packed bits plus float32 scales."""
        scales = self.positive_scales.nbytes
        if self.negative_scales is not None:
            scales += self.negative_scales.nbytes
        return int(self.bits.nbytes + scales)

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per weight, scales included."""
        return 8 * self.nbytes / self.num_weights

    def values(self) -> np.ndarray:
        """The int8 values in {-1, +1} or {-1, 0, +1}, in the kernel's shape."""
        channels = self.shape[-1]
        per_channel = self.num_weights // channels if channels else 0
        width = KIND_CODES[self.kind]
        raw = np.unpackbits(self.bits, axis=1, bitorder="little")[:, : per_channel * width]
        if width == 1:
            columns = raw.astype(np.int8) * 2 - 1
        else:
            codes = raw.reshape(channels, per_channel, 2)
            code = codes[..., 0] + 2 * codes[..., 1]
            if np.any(code == 3):
                raise ValueError("corrupt ternary data: code 3 is not used")
            columns = np.where(code == 1, 1, np.where(code == 2, -1, 0)).astype(np.int8)
        return np.ascontiguousarray(columns.T).reshape(self.shape)


def pack_kernel(kernel: np.ndarray, kind: str | None, *, name: str = "kernel") -> PackedKernel:
    """Packs a binary or ternary kernel.

    Args:
        kernel: Float array whose last axis is the output channels; per
            channel, every positive entry must have one magnitude, and every
            negative entry one magnitude (binary: no zeros, and both equal).
        kind: ``"binary"`` (1 bit per weight) or ``"ternary"`` (2 bits).
        name: Names the kernel in error messages.

    Returns:
        A :class:`PackedKernel`; :func:`unpack_kernel` restores ``kernel`` exactly.

    Raises:
        ValueError: If ``kind`` is unknown, the kernel is not finite, or it is
            not binary/ternary (the message names the first bad channel).

    Example:
        >>> packed = pack_kernel(np.sign(np.random.randn(3, 3, 8, 4)), "binary")
        >>> packed.bits.shape
        (4, 9)
    """
    width = _check_kind(kind)
    kernel = np.asarray(kernel)
    if kernel.ndim < 1 or kernel.size == 0:
        raise ValueError(f"{name}: expected a non-empty kernel, got shape {kernel.shape}")
    if not np.all(np.isfinite(kernel)):
        raise ValueError(f"{name}: kernel has non-finite values")
    kernel = kernel.astype(np.float32)
    channels = kernel.shape[-1]
    columns = kernel.reshape(-1, channels)  # (per_channel, channels)
    positive = _channel_scales(columns, 1, name, kind)
    negative = _channel_scales(columns, -1, name, kind)
    zeros = columns == 0
    if width == 1:
        has_zero = zeros.any(axis=0) & ~zeros.all(axis=0)
        if has_zero.any():
            c = int(np.flatnonzero(has_zero)[0])
            raise ValueError(
                f"{name}: kernel is not binary: output channel {c} has zeros next to "
                "nonzero values; expected +-scale only (use kind='ternary' for zeros)"
            )
        both = (columns > 0).any(axis=0) & (columns < 0).any(axis=0)
        asym = np.flatnonzero(both & (positive != negative))
        if asym.size:
            c = int(asym[0])
            raise ValueError(
                f"{name}: kernel is not binary: output channel {c} has +{float(positive[c])} and "
                f"-{float(negative[c])}; expected +-one scale per channel"
            )
        bits_in = (columns.T > 0).astype(np.uint8)  # all-zero channels read as +0
        scale = np.maximum(positive, negative)
        negative_out = None
    else:
        codes = np.where(columns.T > 0, 1, np.where(columns.T < 0, 2, 0)).astype(np.uint8)
        bits_in = np.stack([codes & 1, codes >> 1], axis=-1).reshape(channels, -1)
        # A side with no entries takes the other side's scale, so symmetric
        # kernels store one array.
        pos_present = (columns > 0).any(axis=0)
        neg_present = (columns < 0).any(axis=0)
        scale = np.where(pos_present, positive, negative)
        negative_full = np.where(neg_present, negative, scale)
        negative_out = None if np.array_equal(scale, negative_full) else negative_full
    bits = np.packbits(bits_in, axis=1, bitorder="little")
    packed = PackedKernel(
        kind, tuple(int(d) for d in kernel.shape), bits, scale.astype(np.float32), negative_out
    )
    return packed


def unpack_kernel(packed: PackedKernel) -> np.ndarray:
    """The float32 kernel :func:`pack_kernel` packed (identical values).

    Example:
        >>> packed = tfc.packing.pack_kernel(binary_kernel, "binary")  # 1 bit each + scales
        >>> np.array_equal(tfc.packing.unpack_kernel(packed), binary_kernel)
        True
    """
    values = packed.values().astype(np.float32)
    if packed.negative_scales is None:
        return values * packed.positive_scales
    return np.where(values > 0, packed.positive_scales, 0.0).astype(np.float32) - np.where(
        values < 0, packed.negative_scales, 0.0
    ).astype(np.float32)
