"""Packed binary ops: bit packing, XNOR-popcount matmul and 2-D convolution.

Each op runs the compiled C++ kernel when it is available (see :func:`has_compiled_kernels`)
and otherwise a pure-TensorFlow fallback that gives identical results. The ops are for
inference: none of them has a gradient.

Bit layout: a value ``v`` becomes bit ``1`` when ``v < 0`` (i.e. -1) and ``0`` otherwise
(+1; ``sign(0) = +1``). Value ``j`` of a row goes to bit ``j % B`` of word ``j // B`` with
``B`` the word width, 32 (``int32`` words) or 64 (``int64`` words). For +-1 vectors of length
``k``: ``dot(a, b) = k - 2 * popcount(bits(a) ^ bits(b))``; padding bits past ``k`` are ignored.

Code paths of the compiled kernels (``isa``): ``"avx512"`` (VPOPCNTDQ), ``"avx2"`` (nibble-lookup
popcount with VPSHUFB), ``"popcnt"`` (scalar), ``"generic"`` (plain C++). ``"auto"`` picks the
best one the CPU has, unless the environment variable ``TFCOMPRESS_BINARY_ISA`` names one (read
on every call; for example ``avx2`` on an AVX-512 machine, to check or time that path). All paths
give bit-identical results.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence

import tensorflow as tf

from tfcompress.core.backend import require_tensorflow_backend
from tfcompress.kernels.tf import build as _build

__all__ = [
    "binary_conv2d",
    "binary_matmul",
    "has_compiled_kernels",
    "kernel_isa",
    "pack_bits",
    "supported_isas",
    "unpack_bits",
]

_WORD_DTYPES = {32: tf.int32, 64: tf.int64}
_ISAS = ("auto", "avx512", "avx2", "popcnt", "generic")
ENV_ISA = "TFCOMPRESS_BINARY_ISA"


def has_compiled_kernels() -> bool:
    """Whether the packed ops run the compiled C++ kernels (else the pure-TF fallbacks).

    The first call compiles the kernels if they are not cached yet (about 30 s, once per
    TensorFlow version and source change). ``False`` when ``TFCOMPRESS_DISABLE_KERNELS=1`` is
    set, no C++ compiler is available, or the build failed (logged once with the reason).

    Returns:
        True when the compiled kernels are loaded and enabled.

    Example:
        >>> import tfcompress as tfc
        >>> tfc.ops.tf.has_compiled_kernels() in (True, False)
        True
    """
    return _build.load() is not None


def kernel_isa() -> str | None:
    """The code path the compiled kernels run with ``isa="auto"``, or None without them.

    That is the best path this CPU has, or the one ``TFCOMPRESS_BINARY_ISA`` forces.

    Returns:
        ``"avx512_vpopcntdq"``, ``"avx2"``, ``"popcnt"`` or ``"generic"``; ``None`` on the
        fallback path.

    Raises:
        ValueError: ``TFCOMPRESS_BINARY_ISA`` names an unknown path or one this CPU lacks.
    """
    lib = _build.load()
    if lib is None:
        return None
    return lib.tfc_kernel_isa(isa=_resolve_isa("auto", lib)).numpy().decode()


def supported_isas() -> tuple[str, ...]:
    """The ``isa`` values the compiled kernels can run on this CPU (empty without them).

    Returns:
        A subset of ``("avx512", "avx2", "popcnt", "generic")``, fastest first.
    """
    lib = _build.load()
    return () if lib is None else _supported(lib)


@functools.cache
def _supported(lib) -> tuple[str, ...]:
    return tuple(name.decode() for name in lib.tfc_supported_isas().numpy())


def _resolve_isa(isa: str, lib) -> str:
    """``isa`` for the op: "auto" becomes ``TFCOMPRESS_BINARY_ISA`` when that is set."""
    _check_isa(isa)
    if isa != "auto":
        return isa
    forced = os.environ.get(ENV_ISA, "").strip().lower()
    if forced in ("", "auto"):
        return "auto"
    if forced not in _ISAS:
        raise ValueError(f"{ENV_ISA} must be one of {_ISAS}, got {forced!r}")
    if lib is not None and forced not in _supported(lib):
        raise ValueError(
            f"{ENV_ISA}={forced!r} but this CPU can run only {_supported(lib)}; unset it or "
            "pick one of those"
        )
    return forced


def _lib(use_kernels: bool | None):
    """The op library to use, or None for the fallback; use_kernels=True insists on it."""
    if use_kernels is False:
        return None
    lib = _build.load()
    if use_kernels and lib is None:
        reason = (
            "disabled by TFCOMPRESS_DISABLE_KERNELS"
            if _build.kernels_disabled()
            else (_build.failure_reason() or "unknown reason")
        )
        raise RuntimeError(f"use_kernels=True but the compiled kernels are unavailable: {reason}")
    return lib


def bits_of(dtype: tf.DType, name: str) -> int:
    """Bits per packed word of ``dtype`` (int32: 32, int64: 64); ``name`` is for the error."""
    for bits, word in _WORD_DTYPES.items():
        if dtype == word:
            return bits
    raise ValueError(f"{name} must hold packed int32 or int64 words, got dtype {dtype.name}")


def _check_bitwidth(bitwidth: int) -> None:
    if bitwidth not in _WORD_DTYPES:
        raise ValueError(f"bitwidth must be 32 or 64, got {bitwidth!r}")


def _check_isa(isa: str) -> None:
    if isa not in _ISAS:
        raise ValueError(f"isa must be one of {_ISAS}, got {isa!r}")


def _words(k: int, bits: int) -> int:
    return -(-k // bits)


def _check_width(width: int | None, k: int, bits: int, name: str, what: str = "k") -> None:
    if width is not None and width != _words(k, bits):
        raise ValueError(
            f"{name} has {width} packed words per row, but {what}={k} at {bits} bits per word "
            f"needs {_words(k, bits)}"
        )


# -------------------------------------------------------------------------------------------
# Packing.


def pack_bits(
    x: tf.Tensor,
    bitwidth: int = 32,
    axis: int = -1,
    strict: bool = False,
    *,
    isa: str = "auto",
    use_kernels: bool | None = None,
) -> tf.Tensor:
    """Packs the signs of ``x`` along ``axis`` into 32- or 64-bit words.

    Inference only: the op has no gradient.

    Args:
        x: Float tensor (float16/bfloat16/float32/float64) of known rank.
        bitwidth: Word width, 32 (``int32`` words) or 64 (``int64`` words).
        axis: The axis to pack (the reduction axis of the later matmul/conv).
        strict: If True, every value must be exactly -1 or +1 (else InvalidArgumentError);
            if False, values are binarised by sign with ``sign(0) = +1``.
        isa: Compiled path only: ``"auto"`` or force ``"avx512"``, ``"avx2"``, ``"popcnt"``,
            ``"generic"`` (float32 input is packed with that instruction set's compares).
        use_kernels: None picks the compiled kernel when available; False forces the pure-TF
            fallback; True requires the compiled kernel.

    Returns:
        ``int32``/``int64`` tensor shaped like ``x`` with ``axis`` of size
        ``ceil(x.shape[axis] / bitwidth)``; padding bits are 0.

    Raises:
        ValueError: bad ``bitwidth``, ``axis``, dtype or ``isa``.
        tf.errors.InvalidArgumentError: ``strict=True`` and a value is not +-1.

    Example:
        >>> pack_bits(tf.constant([[1.0, -1.0, -1.0]])).numpy()
        array([[6]], dtype=int32)
    """
    require_tensorflow_backend("pack_bits (a custom TensorFlow op)")
    _check_bitwidth(bitwidth)
    _check_isa(isa)
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise ValueError(f"x must be a float tensor of +-1 (or signed) values, got {x.dtype.name}")
    rank = x.shape.rank
    if rank is None or rank < 1:
        raise ValueError(f"x must have a known rank >= 1, got shape {x.shape}")
    if not -rank <= axis < rank:
        raise ValueError(f"axis must be in [{-rank}, {rank}), got {axis}")
    axis %= rank
    if axis != rank - 1:
        perm = [*[i for i in range(rank) if i != axis], axis]
        packed = pack_bits(
            tf.transpose(x, perm), bitwidth, -1, strict, isa=isa, use_kernels=use_kernels
        )
        inverse = [perm.index(i) for i in range(rank)]
        return tf.transpose(packed, inverse)
    lib = _lib(use_kernels)
    if lib is not None:
        return lib.tfc_pack_bits(
            x, out_type=_WORD_DTYPES[bitwidth], strict=strict, isa=_resolve_isa(isa, lib)
        )
    return _pack_fallback(x, bitwidth, strict)


def _pack_fallback(x: tf.Tensor, bitwidth: int, strict: bool) -> tf.Tensor:
    if strict:
        ok = tf.reduce_all(tf.logical_or(tf.equal(x, 1), tf.equal(x, -1)))
        bad = tf.boolean_mask(
            tf.reshape(x, [-1]),
            tf.logical_not(
                tf.logical_or(tf.equal(tf.reshape(x, [-1]), 1), tf.equal(tf.reshape(x, [-1]), -1))
            ),
        )
        tf.debugging.Assert(ok, ["x must contain only -1 and +1 when strict=True; found", bad[:3]])
    lead = tf.shape(x)[:-1]
    k = tf.shape(x)[-1]
    bits = tf.cast(tf.reshape(x, [-1, k]) < 0, tf.int32)
    bits = tf.pad(bits, [[0, 0], [0, (-k) % bitwidth]])
    weights = tf.bitwise.left_shift(1, tf.range(8, dtype=tf.int32))
    byte_vals = tf.reduce_sum(
        tf.reshape(bits, [tf.shape(bits)[0], -1, bitwidth // 8, 8]) * weights, axis=-1
    )
    byte_vals = tf.cast(byte_vals, tf.uint8)
    if sys.byteorder != "little":
        byte_vals = tf.reverse(byte_vals, axis=[-1])
    words = tf.bitcast(byte_vals, _WORD_DTYPES[bitwidth])
    return tf.reshape(words, tf.concat([lead, [(k + bitwidth - 1) // bitwidth]], 0))


def unpack_bits(
    packed: tf.Tensor, k: int, axis: int = -1, *, use_kernels: bool | None = None
) -> tf.Tensor:
    """Unpacks words made by :func:`pack_bits` into +-1 ``float32`` values.

    Inference only: the op has no gradient.

    Args:
        packed: ``int32`` or ``int64`` words; the word width follows the dtype.
        k: Number of values along ``axis`` (the length before packing).
        axis: The packed axis.
        use_kernels: As in :func:`pack_bits`.

    Returns:
        ``float32`` tensor with ``axis`` of size ``k``, values -1 (bit set) and +1.

    Raises:
        ValueError: ``packed`` is not int32/int64, or its width does not fit ``k``.

    Example:
        >>> unpack_bits(tf.constant([[6]]), k=3).numpy()
        array([[ 1., -1., -1.]], dtype=float32)
    """
    require_tensorflow_backend("unpack_bits (a custom TensorFlow op)")
    packed = tf.convert_to_tensor(packed)
    bits = bits_of(packed.dtype, "packed")
    if int(k) < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    k = int(k)
    rank = packed.shape.rank
    if rank is None or rank < 1:
        raise ValueError(f"packed must have a known rank >= 1, got shape {packed.shape}")
    if not -rank <= axis < rank:
        raise ValueError(f"axis must be in [{-rank}, {rank}), got {axis}")
    axis %= rank
    if axis != rank - 1:
        perm = [*[i for i in range(rank) if i != axis], axis]
        out = unpack_bits(tf.transpose(packed, perm), k, -1, use_kernels=use_kernels)
        return tf.transpose(out, [perm.index(i) for i in range(rank)])
    _check_width(packed.shape[-1], k, bits, "packed")
    lib = _lib(use_kernels)
    if lib is not None:
        return lib.tfc_unpack_bits(packed, k=k)
    return _unpack_fallback(packed, k, bits)


def _unpack_fallback(packed: tf.Tensor, k: int, bits: int) -> tf.Tensor:
    tf.debugging.assert_equal(
        tf.shape(packed)[-1],
        _words(k, bits),
        message=f"packed width does not match k={k} at {bits} bits per word",
    )
    lead = tf.shape(packed)[:-1]
    byte_vals = tf.bitcast(packed, tf.uint8)  # [..., W, bits // 8]
    if sys.byteorder != "little":
        byte_vals = tf.reverse(byte_vals, axis=[-1])
    flags = tf.bitwise.bitwise_and(
        tf.bitwise.right_shift(tf.cast(byte_vals, tf.int32)[..., None], tf.range(8)), 1
    )
    flat = tf.reshape(flags, tf.concat([lead, [-1]], 0))[..., :k]
    return 1.0 - 2.0 * tf.cast(flat, tf.float32)


# -------------------------------------------------------------------------------------------
# Binary matmul and convolution.


def _check_pair(a: tf.Tensor, b: tf.Tensor, a_name: str, b_name: str) -> int:
    bits = bits_of(a.dtype, a_name)
    if b.dtype != a.dtype:
        raise ValueError(
            f"{a_name} and {b_name} must use the same word type, got "
            f"{a.dtype.name} and {b.dtype.name}"
        )
    wa, wb = a.shape[-1], b.shape[-1]
    if wa is not None and wb is not None and wa != wb:
        raise ValueError(
            f"packed widths differ: {a_name} has {wa} words per row, {b_name} has "
            f"{wb}; both must be packed from the same reduction length"
        )
    return bits


def binary_matmul(
    a_packed: tf.Tensor,
    b_packed: tf.Tensor,
    k: int,
    out_type: tf.DType = tf.float32,
    *,
    isa: str = "auto",
    use_kernels: bool | None = None,
) -> tf.Tensor:
    """+-1 matrix product of packed operands by XNOR + popcount: ``a @ b.T``.

    ``out[..., j] = k - 2 * popcount(a[..., :] ^ b[j, :])`` — exactly the dot product of the
    unpacked +-1 rows. The compiled kernel is vectorised (AVX-512 VPOPCNTDQ or AVX2 when the CPU
    has them, chosen at run time, else scalar POPCNT or plain C++), register- and cache-blocked,
    and runs on TensorFlow's intra-op thread pool. Inference only: the op has no gradient.

    Args:
        a_packed: ``[..., W]`` packed rows (int32 or int64 words), packed along the reduction.
        b_packed: ``[N, W]`` packed rows of the other operand (e.g. a packed Dense kernel,
            one row per output unit; see :func:`tfcompress.ops.tf.pack_dense_kernel`).
        k: The reduction length before packing; ``W == ceil(k / word_bits)``.
        out_type: ``tf.float32`` (default) or ``tf.int32``.
        isa: Compiled path only: ``"auto"`` (the best path, or ``TFCOMPRESS_BINARY_ISA``) or
            force ``"avx512"``, ``"avx2"``, ``"popcnt"``, ``"generic"``.
        use_kernels: As in :func:`pack_bits`.

    Returns:
        ``[..., N]`` tensor of ``out_type``.

    Raises:
        ValueError: word types or packed widths of the operands differ, or do not fit ``k``;
            or an unknown ``isa``.
        tf.errors.InvalidArgumentError: the same, for shapes only known at run time; or a
            forced ``isa`` this CPU lacks.

    Example:
        >>> a = pack_bits(tf.constant([[1.0, -1.0, 1.0]]))
        >>> b = pack_bits(tf.constant([[1.0, 1.0, 1.0], [-1.0, 1.0, -1.0]]))
        >>> binary_matmul(a, b, k=3).numpy()
        array([[ 1., -3.]], dtype=float32)
    """
    require_tensorflow_backend("binary_matmul (a custom TensorFlow op)")
    a_packed = tf.convert_to_tensor(a_packed)
    b_packed = tf.convert_to_tensor(b_packed)
    bits = _check_pair(a_packed, b_packed, "a_packed", "b_packed")
    if b_packed.shape.rank != 2 or a_packed.shape.rank is None or a_packed.shape.rank < 1:
        raise ValueError(
            f"a_packed must be [..., W] and b_packed [N, W], got shapes "
            f"{a_packed.shape} and {b_packed.shape}"
        )
    k = int(k)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    _check_width(a_packed.shape[-1], k, bits, "a_packed")
    if out_type not in (tf.float32, tf.int32):
        raise ValueError(f"out_type must be tf.float32 or tf.int32, got {out_type}")
    _check_isa(isa)
    lead = tf.shape(a_packed)[:-1]
    a2 = tf.reshape(a_packed, [-1, _words(k, bits)]) if a_packed.shape.rank != 2 else a_packed
    lib = _lib(use_kernels)
    if lib is not None:
        out = lib.tfc_binary_matmul(
            a2, b_packed, k=k, out_type=out_type, isa=_resolve_isa(isa, lib)
        )
    else:
        tf.debugging.assert_equal(
            tf.shape(b_packed)[-1],
            tf.shape(a2)[-1],
            message="packed widths differ between a_packed and b_packed",
        )
        prod = tf.linalg.matmul(
            _unpack_fallback(a2, k, bits), _unpack_fallback(b_packed, k, bits), transpose_b=True
        )  # exact: integer sums < 2**24
        out = tf.cast(prod, out_type)
    if a_packed.shape.rank == 2:
        return out
    out = tf.reshape(out, tf.concat([lead, tf.shape(b_packed)[:1]], 0))
    return tf.ensure_shape(out, a_packed.shape[:-1].concatenate(b_packed.shape[:1]))


def _pair(value: int | Sequence[int], name: str) -> list[int]:
    vals = [value, value] if isinstance(value, int) else list(value)
    if len(vals) != 2 or any(not isinstance(v, int) or v < 1 for v in vals):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return vals


def binary_conv2d(
    x_packed: tf.Tensor,
    filters_packed: tf.Tensor,
    channels: int,
    strides: int | Sequence[int] = 1,
    padding: str = "valid",
    dilation_rate: int | Sequence[int] = 1,
    *,
    isa: str = "auto",
    use_kernels: bool | None = None,
) -> tf.Tensor:
    """2-D convolution of +-1 NHWC input with +-1 filters, both packed along channels.

    Equals ``tf.nn.conv2d`` on the unpacked +-1 tensors, with ``"same"`` padding contributing 0
    like a float convolution's zero padding. The compiled kernel does im2col into bit-dense
    patch rows plus the XNOR-popcount GEMM of :func:`binary_matmul`. Inference only: the op has
    no gradient.

    Args:
        x_packed: ``[B, H, W, Cw]`` input packed along channels (:func:`pack_bits`).
        filters_packed: ``[O, KH, KW, Cw]`` filters packed along channels (see
            :func:`tfcompress.ops.tf.pack_conv2d_kernel`).
        channels: Input channels before packing; ``Cw == ceil(channels / word_bits)``.
        strides: Int or pair.
        padding: ``"valid"`` or ``"same"`` (case-insensitive).
        dilation_rate: Int or pair.
        isa: As in :func:`binary_matmul`.
        use_kernels: As in :func:`pack_bits`.

    Returns:
        ``[B, OH, OW, O]`` float32 tensor of exact integer values.

    Raises:
        ValueError: ranks, word types or packed widths do not match, or bad conv arguments.
        tf.errors.InvalidArgumentError: the same, for shapes only known at run time.

    Example:
        >>> x = pack_bits(tf.ones([1, 3, 3, 5]))
        >>> f = pack_bits(-tf.ones([2, 3, 3, 5]))
        >>> binary_conv2d(x, f, channels=5).numpy().ravel()
        array([-45., -45.], dtype=float32)
    """
    require_tensorflow_backend("binary_conv2d (a custom TensorFlow op)")
    x_packed = tf.convert_to_tensor(x_packed)
    filters_packed = tf.convert_to_tensor(filters_packed)
    bits = _check_pair(x_packed, filters_packed, "x_packed", "filters_packed")
    if x_packed.shape.rank != 4 or filters_packed.shape.rank != 4:
        raise ValueError(
            f"x_packed must be [B, H, W, Cw] and filters_packed [O, KH, KW, Cw], got "
            f"shapes {x_packed.shape} and {filters_packed.shape}"
        )
    channels = int(channels)
    if channels < 0:
        raise ValueError(f"channels must be >= 0, got {channels}")
    _check_width(x_packed.shape[-1], channels, bits, "x_packed", "channels")
    strides = _pair(strides, "strides")
    dilation_rate = _pair(dilation_rate, "dilation_rate")
    pad = str(padding).upper()
    if pad not in ("SAME", "VALID"):
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    if max(strides) > 1 and max(dilation_rate) > 1:
        raise ValueError(
            "strides > 1 together with dilation_rate > 1 is not supported "
            f"(like keras.layers.Conv2D), got {strides} and {dilation_rate}"
        )
    _check_isa(isa)
    lib = _lib(use_kernels)
    if lib is not None:
        return lib.tfc_binary_conv2d(
            x_packed,
            filters_packed,
            channels=channels,
            strides=strides,
            dilations=dilation_rate,
            padding=pad,
            isa=_resolve_isa(isa, lib),
        )
    tf.debugging.assert_equal(
        tf.shape(filters_packed)[-1],
        tf.shape(x_packed)[-1],
        message="packed widths differ between x_packed and filters_packed",
    )
    x = _unpack_fallback(x_packed, channels, bits)
    f = _unpack_fallback(filters_packed, channels, bits)  # [O, KH, KW, C]
    if filters_packed.shape[1] is None or filters_packed.shape[2] is None:
        raise ValueError(
            f"the fallback needs the filter size known statically, got {filters_packed.shape}"
        )
    kh, kw = int(filters_packed.shape[1]), int(filters_packed.shape[2])
    patches = tf.image.extract_patches(  # zeros where "same" pads, ordered (kh, kw, c)
        x, sizes=[1, kh, kw, 1], strides=[1, *strides, 1], rates=[1, *dilation_rate, 1], padding=pad
    )
    f2 = tf.reshape(f, [tf.shape(f)[0], -1])
    return tf.einsum("bhwk,ok->bhwo", patches, f2)  # exact: integer sums < 2**24
