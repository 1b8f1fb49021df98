"""Inference entry points for binary layers: pack a kernel once, then run on packed bits.

A binary Dense/Conv2D layer computes ``(sign(x) . sign(W)) * scale + bias``. For inference the
sign of the kernel is packed once (:func:`pack_dense_kernel`, :func:`pack_conv2d_kernel`) and
each call packs the input signs and runs the XNOR-popcount op. The results equal the float
computation on +-1 values exactly (before ``scale``; after it, up to float rounding of one
multiply). Sign convention: ``sign(0) = +1``. Inference only: no gradients flow through these
functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfcompress.core.backend import require_tensorflow_backend
from tfcompress.kernels.tf.binary_ops import (
    binary_conv2d,
    binary_matmul,
    bits_of,
    pack_bits,
)

__all__ = [
    "binary_conv2d_inference",
    "binary_dense_inference",
    "pack_conv2d_kernel",
    "pack_dense_kernel",
]


def pack_dense_kernel(
    kernel: tf.Tensor, bitwidth: int = 32, *, use_kernels: bool | None = None
) -> tf.Tensor:
    """Packs the signs of a Dense kernel ``[in, units]`` into ``[units, ceil(in / bitwidth)]``.

    Args:
        kernel: Float kernel ``[in_features, units]`` (latent or already +-1 weights).
        bitwidth: 32 or 64.
        use_kernels: As in :func:`tfcompress.ops.tf.pack_bits`.

    Returns:
        int32/int64 packed kernel, one row per output unit.

    Raises:
        ValueError: ``kernel`` is not 2-D or ``bitwidth`` is not 32/64.

    Example:
        >>> pack_dense_kernel(tf.constant([[1.0], [-1.0]])).numpy()
        array([[2]], dtype=int32)
    """
    require_tensorflow_backend("pack_dense_kernel (a custom TensorFlow op)")
    kernel = tf.convert_to_tensor(kernel)
    if kernel.shape.rank != 2:
        raise ValueError(f"kernel must be 2-D [in, units], got shape {kernel.shape}")
    return pack_bits(tf.transpose(kernel), bitwidth, use_kernels=use_kernels)


def pack_conv2d_kernel(
    kernel: tf.Tensor, bitwidth: int = 32, *, use_kernels: bool | None = None
) -> tf.Tensor:
    """Packs a Conv2D kernel ``[KH, KW, C, O]`` into ``[O, KH, KW, ceil(C / bitwidth)]``.

    Args:
        kernel: Float kernel in Keras layout ``[KH, KW, C_in, C_out]``.
        bitwidth: 32 or 64.
        use_kernels: As in :func:`tfcompress.ops.tf.pack_bits`.

    Returns:
        int32/int64 packed filters, one ``[KH, KW, Cw]`` block per output channel.

    Raises:
        ValueError: ``kernel`` is not 4-D or ``bitwidth`` is not 32/64.

    Example:
        >>> pack_conv2d_kernel(tf.ones([3, 3, 8, 4])).shape
        TensorShape([4, 3, 3, 1])
    """
    require_tensorflow_backend("pack_conv2d_kernel (a custom TensorFlow op)")
    kernel = tf.convert_to_tensor(kernel)
    if kernel.shape.rank != 4:
        raise ValueError(f"kernel must be 4-D [KH, KW, C_in, C_out], got shape {kernel.shape}")
    return pack_bits(tf.transpose(kernel, [3, 0, 1, 2]), bitwidth, use_kernels=use_kernels)


def _scale_and_bias(y: tf.Tensor, scale, bias) -> tf.Tensor:
    if scale is not None:
        y = y * tf.cast(scale, y.dtype)
    if bias is not None:
        y = y + tf.cast(bias, y.dtype)
    return y


def binary_dense_inference(
    x: tf.Tensor,
    packed_kernel: tf.Tensor,
    scale: tf.Tensor | float | None = None,
    bias: tf.Tensor | None = None,
    *,
    use_kernels: bool | None = None,
) -> tf.Tensor:
    """``(sign(x) @ sign(W)) * scale + bias`` with a packed kernel, by XNOR + popcount.

    Inference only: no gradient flows to ``x`` (the sign is not differentiable here).

    Args:
        x: Float input ``[..., in_features]`` (binarised by sign, ``sign(0) = +1``).
        packed_kernel: From :func:`pack_dense_kernel`, ``[units, ceil(in / bits)]``.
        scale: Optional scalar or per-unit ``[units]`` factor (e.g. XNOR-Net's mean |W|).
        bias: Optional ``[units]`` bias.
        use_kernels: As in :func:`tfcompress.ops.tf.pack_bits`.

    Returns:
        float32 ``[..., units]``.

    Raises:
        ValueError: the last axis of ``x`` is unknown or does not fit ``packed_kernel``.

    Example:
        >>> w = tf.constant([[0.5, -0.2], [-1.0, 0.3]])
        >>> binary_dense_inference(tf.constant([[2.0, -3.0]]), pack_dense_kernel(w)).numpy()
        array([[ 2., -2.]], dtype=float32)
    """
    require_tensorflow_backend("binary_dense_inference (a custom TensorFlow op)")
    x = tf.convert_to_tensor(x)
    k = x.shape[-1]
    if k is None:
        raise ValueError(f"x must have a known last dimension, got shape {x.shape}")
    packed_kernel = tf.convert_to_tensor(packed_kernel)
    bits = bits_of(packed_kernel.dtype, "packed_kernel")
    xp = pack_bits(
        tf.cast(x, tf.float32) if not x.dtype.is_floating else x, bits, use_kernels=use_kernels
    )
    y = binary_matmul(xp, packed_kernel, int(k), use_kernels=use_kernels)
    return _scale_and_bias(y, scale, bias)


def binary_conv2d_inference(
    x: tf.Tensor,
    packed_filters: tf.Tensor,
    scale: tf.Tensor | float | None = None,
    bias: tf.Tensor | None = None,
    strides: int | Sequence[int] = 1,
    padding: str = "valid",
    dilation_rate: int | Sequence[int] = 1,
    *,
    use_kernels: bool | None = None,
) -> tf.Tensor:
    """Binary Conv2D inference: ``conv(sign(x), sign(W)) * scale + bias`` on packed bits.

    Zero ("same") padding contributes 0, as in ``keras.layers.Conv2D`` applied to +-1 values.
    Inference only: no gradient flows to ``x``.

    Args:
        x: Float NHWC input ``[B, H, W, C]`` (binarised by sign, ``sign(0) = +1``).
        packed_filters: From :func:`pack_conv2d_kernel`, ``[O, KH, KW, ceil(C / bits)]``.
        scale: Optional scalar or per-filter ``[O]`` factor.
        bias: Optional ``[O]`` bias.
        strides: Int or pair.
        padding: ``"valid"`` or ``"same"``.
        dilation_rate: Int or pair.
        use_kernels: As in :func:`tfcompress.ops.tf.pack_bits`.

    Returns:
        float32 ``[B, OH, OW, O]``.

    Raises:
        ValueError: ``x`` is not 4-D with a known channel count, or does not fit the filters.

    Example:
        >>> f = pack_conv2d_kernel(tf.ones([3, 3, 4, 2]))
        >>> binary_conv2d_inference(tf.ones([1, 5, 5, 4]), f, padding="same").shape
        TensorShape([1, 5, 5, 2])
    """
    require_tensorflow_backend("binary_conv2d_inference (a custom TensorFlow op)")
    x = tf.convert_to_tensor(x)
    if x.shape.rank != 4 or x.shape[-1] is None:
        raise ValueError(f"x must be NHWC with a known channel count, got shape {x.shape}")
    packed_filters = tf.convert_to_tensor(packed_filters)
    bits = bits_of(packed_filters.dtype, "packed_filters")
    xp = pack_bits(
        tf.cast(x, tf.float32) if not x.dtype.is_floating else x, bits, use_kernels=use_kernels
    )
    y = binary_conv2d(
        xp,
        packed_filters,
        int(x.shape[-1]),
        strides,
        padding,
        dilation_rate,
        use_kernels=use_kernels,
    )
    return _scale_and_bias(y, scale, bias)
