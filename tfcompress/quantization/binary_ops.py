"""Binary, ternary and low-bit quantization functions with their pseudo-gradients.

Pure functions on :mod:`keras.ops` (any backend). Each returns the quantized
values exactly (``+1``/``-1``, ``0``, or a per-channel scale times those), and
the gradient the paper prescribes, through :func:`with_gradient`:
``stop_gradient(q) + (t - stop_gradient(t))`` with ``t = x * stop_gradient(slope)``.
The second term is exactly 0 in the forward pass (a float minus itself), so a
binary kernel stays bit-exactly binary (the packed storage and the TFLite
export rely on that), and its gradient is ``slope``. Unlike
``tf.custom_gradient`` this leaves only ordinary ops in an exported graph.

Conventions:

* ``sign(0) = +1`` so every output is one of two values.
* Per-channel scales reduce over every axis except ``channel_axis`` (the last
  axis of Dense and Conv kernels: the output units/filters).
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = [
    "approx_sign",
    "channel_mean",
    "check_clip_value",
    "check_dorefa",
    "check_threshold",
    "dorefa",
    "flip_ratio",
    "magnitude_aware_sign",
    "sign",
    "ste_sign",
    "swish_sign",
    "ternarize",
    "ternary_threshold",
    "ttq",
    "with_gradient",
]


def _tensor(x):
    return ops.convert_to_tensor(x)


def with_gradient(forward, x, slope):
    """``forward`` exactly in the forward pass, ``d/dx = slope`` in the backward pass.

    Args:
        forward: The forward values (any function of ``x``; no gradient flows
            through it).
        x: The input the gradient flows to.
        slope: The pseudo-derivative, broadcastable to ``x`` (treated as a
            constant).

    Returns:
        A tensor equal to ``forward`` whose gradient with respect to ``x`` is
        ``upstream * slope``.
    """
    t = x * ops.stop_gradient(slope)
    return ops.stop_gradient(forward) + (t - ops.stop_gradient(t))


def sign(x):
    """``+1`` where ``x >= 0``, ``-1`` elsewhere (no gradient defined)."""
    x = ops.convert_to_tensor(x)
    # Elementwise ops only: the TFLite converter folds them into a constant
    # kernel (a scalar-branch select is left unfolded and kept at run time).
    return ops.cast(ops.greater_equal(x, 0), x.dtype) * 2 - 1


def check_clip_value(clip_value: float | None) -> None:
    """Raises ValueError unless ``clip_value`` is ``None`` or a number > 0."""
    if clip_value is not None and not clip_value > 0:
        raise ValueError(f"clip_value must be > 0 or None, got {clip_value!r}")


def _pass_mask(x, clip_value: float | None):
    if clip_value is None:
        return ops.ones_like(x)
    return ops.cast(ops.less_equal(ops.abs(x), clip_value), x.dtype)


def ste_sign(x, clip_value: float | None = 1.0):
    """Sign with the clipped straight-through estimator (BinaryConnect / BNN).

    Forward: ``q(x) = +1 if x >= 0 else -1``.
    Gradient: ``dq/dx = 1 if |x| <= clip_value else 0`` (``clip_value=None``:
    always 1). The clip edge ``|x| == clip_value`` passes the gradient.

    References:
        Courbariaux et al., "Binarized Neural Networks", 2016
        (arXiv:1602.02830).
    """
    check_clip_value(clip_value)

    x = _tensor(x)
    return with_gradient(sign(x), x, _pass_mask(x, clip_value))


def approx_sign(x):
    """Sign with the piecewise-polynomial gradient of Bi-Real Net.

    Forward: ``q(x) = +1 if x >= 0 else -1``.
    Gradient: ``dq/dx = 2 - 2|x|`` for ``|x| <= 1``, else 0 (the derivative
    of the quadratic approximation of sign).

    References:
        Liu et al., "Bi-Real Net", ECCV 2018 (arXiv:1808.00278).
    """
    x = _tensor(x)
    abs_x = ops.abs(x)
    slope = ops.where(ops.less_equal(abs_x, 1.0), 2.0 - 2.0 * abs_x, ops.zeros_like(x))
    return with_gradient(sign(x), x, slope)


def swish_sign(x, beta: float = 5.0):
    """Sign with the SignSwish gradient of BNN+.

    Forward: ``q(x) = +1 if x >= 0 else -1``.
    Gradient: ``dq/dx = beta * (2 - beta * x * tanh(beta * x / 2)) / (1 + cosh(beta * x))``,
    the derivative of ``2 * sigmoid(beta x) * (1 + beta x (1 - sigmoid(beta x))) - 1``.

    References:
        Darabi et al., "BNN+: Improved Binary Network Training", 2018
        (arXiv:1812.11800).
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")

    x = _tensor(x)
    bx = beta * x
    # 1 + cosh overflows to inf for |bx| > ~89, where the slope is 0 anyway.
    slope = beta * (2.0 - bx * ops.tanh(bx / 2.0)) / (1.0 + ops.cosh(bx))
    slope = ops.where(ops.isfinite(slope), slope, ops.zeros_like(slope))
    return with_gradient(sign(x), x, slope)


def _reduce_axes(ndim: int, channel_axis: int | None) -> list[int]:
    if channel_axis is None or ndim == 0:
        return list(range(ndim))
    axis = channel_axis % ndim
    return [a for a in range(ndim) if a != axis]


def _exact_mean(values, axes, keepdims: bool = True):
    # Accumulate in float64: for a channel whose entries share one magnitude
    # the mean is then exactly that magnitude, so unpacked kernels re-quantize
    # to the very same scales (bit-exact packed round trips).
    mean = ops.mean(ops.cast(values, "float64"), axis=axes, keepdims=keepdims)
    return ops.cast(mean, values.dtype)


def channel_mean(x, channel_axis: int | None = -1, keepdims: bool = True):
    """Mean of ``|x|`` over every axis but ``channel_axis`` (all axes if None)."""
    x = _tensor(x)
    return _exact_mean(ops.abs(x), _reduce_axes(len(x.shape), channel_axis), keepdims)


def magnitude_aware_sign(x, clip_value: float | None = 1.0, channel_axis: int | None = -1):
    """Sign times the per-channel mean magnitude (XNOR-Net weight binarization).

    Forward: ``q(x) = alpha_c * sign(x)`` with ``alpha_c = mean(|x|)`` over the
    channel's entries.
    Gradient: ``dq/dx = alpha_c`` where ``|x| <= clip_value``, else 0 (the
    scale is treated as a constant, as in Bi-Real Net's magnitude-aware
    gradient).

    References:
        Rastegari et al., "XNOR-Net", ECCV 2016 (arXiv:1603.05279).
    """
    check_clip_value(clip_value)

    x = _tensor(x)
    scale = channel_mean(x, channel_axis)
    return with_gradient(scale * sign(x), x, scale * _pass_mask(x, clip_value))


def ternary_threshold(x, threshold: float = 0.7, channel_axis: int | None = -1):
    """TWN's threshold ``delta_c = threshold * mean(|x|)`` per channel (keepdims)."""
    return threshold * channel_mean(x, channel_axis)


def check_threshold(threshold: float) -> None:
    """Raises ValueError unless ``threshold`` is a number in (0, 1)."""
    if not (isinstance(threshold, (int, float)) and 0 < threshold < 1):
        raise ValueError(f"threshold must be a number in (0, 1), got {threshold!r}")


def ternarize(
    x,
    threshold: float = 0.7,
    clip_value: float | None = 1.0,
    channel_axis: int | None = -1,
):
    """Ternary Weight Networks: ``{-alpha, 0, +alpha}`` with a magnitude threshold.

    Forward: ``delta_c = threshold * mean(|x|)``; ``t = sign(x)`` where
    ``|x| > delta_c`` and 0 elsewhere; ``alpha_c`` = mean of ``|x|`` over the
    entries above the threshold; ``q(x) = alpha_c * t``.
    Gradient: ``dq/dx = alpha_c`` where ``|x| <= clip_value``, else 0 (scale
    and threshold are constants).

    Raises:
        ValueError: If ``threshold`` is not in (0, 1).

    References:
        Li, Zhang and Liu, "Ternary Weight Networks", 2016 (arXiv:1605.04711).
    """
    check_threshold(threshold)
    check_clip_value(clip_value)

    x = _tensor(x)
    axes = _reduce_axes(len(x.shape), channel_axis)
    abs_x = ops.abs(x)
    delta = threshold * _exact_mean(abs_x, axes)
    keep = ops.cast(ops.greater(abs_x, delta), x.dtype)
    count = ops.sum(ops.cast(keep, "float64"), axis=axes, keepdims=True)
    total = ops.sum(ops.cast(abs_x * keep, "float64"), axis=axes, keepdims=True)
    scale = ops.cast(total / ops.maximum(count, 1.0), x.dtype)
    return with_gradient(scale * sign(x) * keep, x, scale * _pass_mask(x, clip_value))


def ttq(x, positive_scale, negative_scale, threshold: float = 0.05, channel_axis: int | None = -1):
    """Trained Ternary Quantization: ternary values with learned scales.

    Forward: ``delta_c = threshold * max(|x|)`` per channel;
    ``q = W_p`` where ``x > delta``, ``-W_n`` where ``x < -delta``, 0 elsewhere.
    Gradients: ``dL/dW_p = sum(dL/dq)`` over the positive entries,
    ``dL/dW_n = -sum(dL/dq)`` over the negative entries (per channel),
    ``dL/dx = W_p * dL/dq`` (positive), ``1 * dL/dq`` (zero),
    ``W_n * dL/dq`` (negative).

    Args:
        x: The latent weights.
        positive_scale: ``W_p``, broadcastable to the per-channel shape
            (a scalar or one value per channel).
        negative_scale: ``W_n`` (positive numbers; the value used is ``-W_n``).
        threshold: Fraction of the channel's max magnitude, in (0, 1).
        channel_axis: Axis of the channels (None: one threshold per tensor).

    Raises:
        ValueError: If ``threshold`` is not in (0, 1).

    References:
        Zhu et al., "Trained Ternary Quantization", ICLR 2017 (arXiv:1612.01064).
    """
    check_threshold(threshold)
    x = _tensor(x)
    axes = _reduce_axes(len(x.shape), channel_axis)
    delta = threshold * ops.max(ops.abs(x), axis=axes, keepdims=True)
    pos = ops.cast(ops.greater(x, delta), x.dtype)
    neg = ops.cast(ops.less(x, -delta), x.dtype)
    # Per-channel (or scalar) scales broadcast along the channel axis; their
    # gradients (sums over the positive/negative entries) come from autodiff.
    shape = [1] * len(x.shape)
    if channel_axis is not None and len(x.shape):
        shape[channel_axis % len(x.shape)] = -1
    wp = ops.reshape(_tensor(positive_scale), shape)
    wn = ops.reshape(_tensor(negative_scale), shape)
    value = wp * pos - wn * neg
    slope = wp * pos + wn * neg + (1.0 - pos - neg)
    return value + with_gradient(ops.zeros_like(x), x, slope)


def _round_ste(x):
    return with_gradient(ops.round(x), x, ops.ones_like(x))


def check_dorefa(k_bit: int, mode: str) -> None:
    """Raises ValueError unless ``k_bit`` is an integer in [1, 16] and ``mode`` is known."""
    if not isinstance(k_bit, int) or isinstance(k_bit, bool) or not 1 <= k_bit <= 16:
        raise ValueError(f"k_bit must be an integer in [1, 16], got {k_bit!r}")
    if mode not in ("activations", "weights"):
        raise ValueError(f"mode must be 'activations' or 'weights', got {mode!r}")


def dorefa(x, k_bit: int = 2, mode: str = "activations"):
    """DoReFa-Net k-bit quantization.

    ``quantize_k(r) = round((2^k - 1) r) / (2^k - 1)`` with a straight-through
    rounding (gradient 1).

    * ``mode="activations"``: ``q = quantize_k(clip(x, 0, 1))``; gradient 1
      for ``0 <= x <= 1``, else 0.
    * ``mode="weights"``: ``q = 2 quantize_k(tanh(x) / (2 max|tanh(x)|) + 1/2) - 1``;
      gradient: the derivative of that expression with rounding as identity.

    Raises:
        ValueError: If ``k_bit`` is not an integer in [1, 16] or ``mode`` is unknown.

    References:
        Zhou et al., "DoReFa-Net", 2016 (arXiv:1606.06160).
    """
    check_dorefa(k_bit, mode)
    levels = float(2**k_bit - 1)
    x = _tensor(x)
    if mode == "activations":
        # Gradient of the clip: 1 inside [0, 1] (edges included), 0 outside.
        inside = ops.logical_and(ops.greater_equal(x, 0.0), ops.less_equal(x, 1.0))
        clipped = with_gradient(ops.clip(x, 0.0, 1.0), x, ops.cast(inside, x.dtype))
        return _round_ste(clipped * levels) / levels
    t = ops.tanh(x)
    t = t / (2.0 * ops.maximum(ops.max(ops.abs(t)), 1e-12)) + 0.5
    return 2.0 * (_round_ste(t * levels) / levels) - 1.0


def flip_ratio(before, after) -> float:
    """Fraction of entries whose sign (``x >= 0``) differs between two arrays."""
    b = keras.ops.convert_to_numpy(before) >= 0
    a = keras.ops.convert_to_numpy(after) >= 0
    if b.shape != a.shape:
        raise ValueError(f"shapes differ: {b.shape} vs {a.shape}")
    return float((a != b).mean()) if a.size else 0.0
