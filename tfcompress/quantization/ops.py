"""Uniform quantization math on ``keras.ops`` (any backend).

Everything here is a pure function of tensors: integer grids, scales and zero
points, straight-through rounding, fake quantization with a fixed or a learned
range (LSQ), PACT clipping and power-of-two scales. Quantizer objects
(:mod:`tfcompress.quantizers`) combine these with state held by a layer.

Conventions: a ``b``-bit signed grid is ``[-2^(b-1), 2^(b-1) - 1]``, or
``[-(2^(b-1) - 1), 2^(b-1) - 1]`` with ``narrow_range`` (what TFLite wants for
int8 weights: zero point 0, symmetric); an unsigned grid is ``[0, 2^b - 1]``.
Rounding is half-up (``floor(v + 0.5)``) as in TensorFlow's FakeQuant kernels,
so a training-time and an export-time fake quantization agree bit for bit.

On the TensorFlow backend, :func:`fake_quant` lowers to
``tf.quantization.fake_quant_with_min_max_vars[_per_channel]`` through
:func:`keras.quantizers.fake_quant_with_min_max_vars`: the op the TFLite
converter turns into real int8 kernels.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = [
    "broadcast_shape",
    "fake_quant",
    "lsq_fake_quant",
    "lsq_grad_scale",
    "lsq_initial_step",
    "pact_fake_quant",
    "power_of_two",
    "power_of_two_range",
    "quantization_grid",
    "reduce_axes",
    "round_ste",
    "scale_gradient",
    "symmetric_range",
    "tensor_range",
    "validate_axis",
    "validate_bits",
]


def validate_bits(bits: int, minimum: int, maximum: int, owner: str = "quantizer") -> int:
    """Returns ``bits`` or raises ValueError naming the supported range."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not minimum <= bits <= maximum:
        raise ValueError(
            f"bits={bits!r} is not supported by {owner}; expected an integer in "
            f"[{minimum}, {maximum}]"
        )
    return bits


def validate_axis(axis: int | None, shape: tuple[int | None, ...], owner: str = "quantizer"):
    """Returns ``axis`` made non-negative (None stays None) or raises ValueError."""
    if axis is None:
        return None
    rank = len(shape)
    if isinstance(axis, bool) or not isinstance(axis, int) or not -rank <= axis < rank:
        raise ValueError(
            f"axis={axis!r} is out of range for {owner} on a tensor of shape {tuple(shape)}; "
            f"expected None (per-tensor) or an integer in [{-rank}, {rank - 1}]"
        )
    return axis % rank


def quantization_grid(bits: int, signed: bool, narrow_range: bool = False) -> tuple[int, int]:
    """The integer range ``(qmin, qmax)`` of a ``bits``-bit grid.

    Example:
        >>> quantization_grid(8, signed=True, narrow_range=True)
        (-127, 127)
    """
    if signed:
        qmax = 2 ** (bits - 1) - 1
        return (-qmax if narrow_range else -qmax - 1), qmax
    return (1 if narrow_range else 0), 2**bits - 1


def reduce_axes(rank: int, axis: int | None) -> tuple[int, ...] | None:
    """Axes to reduce over for per-channel statistics along ``axis`` (None: all)."""
    if axis is None:
        return None
    return tuple(i for i in range(rank) if i != axis)


def broadcast_shape(rank: int, axis: int | None, channels: int) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel vector along ``axis`` of a rank-``rank`` tensor."""
    if axis is None:
        return ()
    return tuple(channels if i == axis else 1 for i in range(rank))


def tensor_range(x, axis: int | None = None):
    """``(min, max)`` of ``x``, per channel along ``axis`` or per tensor, always containing 0."""
    axes = reduce_axes(len(x.shape), axis)
    low = ops.minimum(ops.min(x, axis=axes), 0.0)
    high = ops.maximum(ops.max(x, axis=axes), 0.0)
    return low, high


def symmetric_range(x, axis: int | None = None):
    """``(-m, m)`` with ``m = max|x|`` per channel along ``axis`` or per tensor."""
    high = ops.max(ops.abs(x), axis=reduce_axes(len(x.shape), axis))
    return -high, high


def round_ste(x):
    """Half-up rounding whose gradient is the identity (straight-through estimator).

    Forward: ``floor(x + 0.5)``. Pseudo-gradient: ``d/dx = 1``.
    """
    return x + ops.stop_gradient(ops.floor(x + 0.5) - x)


def scale_gradient(x, factor: float):
    """Identity forward; the gradient is multiplied by ``factor`` (LSQ's grad scaling)."""
    scaled = x * factor
    return ops.stop_gradient(x - scaled) + scaled


def power_of_two(scale, ste: bool = True):
    """Rounds a positive scale up to the next power of two (``2^ceil(log2 s)``).

    Rounding up keeps the whole range representable. With ``ste`` the gradient
    passes straight through to ``scale``.
    """
    rounded = ops.power(2.0, ops.ceil(ops.log2(ops.maximum(scale, 1e-30))))
    return scale + ops.stop_gradient(rounded - scale) if ste else rounded


def power_of_two_range(low, high, bits: int, narrow_range: bool, symmetric: bool):
    """Widens ``[low, high]`` so that the grid step is a power of two.

    Symmetric ranges stay centred on zero; asymmetric ones keep ``low`` and
    extend ``high`` (the zero point is then nudged by the fake-quant op).
    """
    levels = 2**bits - (2 if narrow_range else 1)
    if symmetric:
        _, qmax = quantization_grid(bits, signed=True, narrow_range=narrow_range)
        step = power_of_two(ops.maximum(high, 1e-8) / qmax, ste=False)
        return -step * qmax if narrow_range else -step * (qmax + 1), step * qmax
    step = power_of_two(ops.maximum(high - low, 1e-8) / levels, ste=False)
    return low, low + step * levels


def fake_quant(x, low, high, bits: int, narrow_range: bool = False, axis: int | None = None):
    """Quantize-dequantize ``x`` onto a ``bits``-bit grid spanning ``[low, high]``.

    The range is nudged so that 0 is exactly representable (as TensorFlow and
    TFLite do). On TensorFlow it is one ``FakeQuantWithMinMaxVars[PerChannel]``
    op, which the TFLite converter maps to int8 kernels.

    Forward: ``clip(x, lo, hi)`` rounded to the nearest of ``2^b - 1`` (or
    ``2^b - 2`` with ``narrow_range``) equal steps. Pseudo-gradient (STE):
    ``d/dx = 1`` inside ``[lo, hi]`` and 0 outside.

    Args:
        x: Float tensor.
        low: Range minimum: a scalar, or one value per channel along ``axis``.
        high: Range maximum, same shape as ``low``.
        bits: Grid width, 2 to 16.
        narrow_range: Use ``2^b - 1`` levels (symmetric int8 weights).
        axis: Channel axis of per-channel ranges, or None.

    Returns:
        A tensor shaped like ``x``.
    """
    low = ops.stop_gradient(ops.convert_to_tensor(low, dtype="float32"))
    high = ops.stop_gradient(ops.convert_to_tensor(high, dtype="float32"))
    # A degenerate range (all zeros: a dead ReLU, a fully pruned channel) would
    # divide by zero. Widen it around its centre so that a symmetric range stays
    # symmetric: TFLite rejects int8 weights whose zero point is not 0.
    widen = ops.maximum(1e-6 - (high - low), 0.0) / 2.0
    low, high = low - widen, high + widen
    return keras.quantizers.fake_quant_with_min_max_vars(
        x, low, high, num_bits=bits, narrow_range=narrow_range, axis=axis
    )


def lsq_initial_step(x, qmax: int, axis: int | None = None):
    """LSQ's initial step ``2 * mean|x| / sqrt(qmax)`` (per channel along ``axis``)."""
    mean_abs = ops.mean(ops.abs(x), axis=reduce_axes(len(x.shape), axis))
    return ops.maximum(2.0 * mean_abs / (qmax**0.5), 1e-8)


def lsq_grad_scale(num_elements: int, qmax: int) -> float:
    """LSQ's gradient scale ``1 / sqrt(N * qmax)`` for a step shared by ``N`` values."""
    return 1.0 / max(1.0, float(num_elements) * qmax) ** 0.5


def lsq_fake_quant(x, step, qmin: int, qmax: int, grad_scale: float = 1.0):
    """Fake quantization with a learned step size (LSQ).

    Forward: ``s * clip(floor(x / s + 0.5), qmin, qmax)``.
    Pseudo-gradients: ``d/dx = 1`` where ``qmin <= x/s <= qmax``, else 0;
    ``d/ds = (round(x/s) - x/s)`` inside, ``qmin`` below and ``qmax`` above,
    times ``grad_scale``.

    Args:
        x: Float tensor.
        step: Positive step ``s``, broadcastable to ``x`` (per-channel allowed).
        qmin: Lowest integer level.
        qmax: Highest integer level.
        grad_scale: Multiplies the step's gradient (see :func:`lsq_grad_scale`).

    Returns:
        A tensor shaped like ``x``.

    References:
        Esser et al., "Learned Step Size Quantization", ICLR 2020.
    """
    step = scale_gradient(step, grad_scale)
    scaled = ops.clip(x / step, float(qmin), float(qmax))
    return round_ste(scaled) * step


def pact_fake_quant(x, alpha, bits: int):
    """PACT: clip to ``[0, alpha]`` with a learned ``alpha``, then quantize unsigned.

    Forward: ``y = clip(x, 0, alpha)``; ``q = round(y * (2^b - 1) / alpha) *
    alpha / (2^b - 1)``. Pseudo-gradients: ``d/dx = 1`` for ``0 <= x < alpha``,
    else 0; ``d/dalpha = 1`` where ``x >= alpha``, else 0 (rounding is straight
    through).

    References:
        Choi et al., "PACT: Parameterized Clipping Activation for Quantized
        Neural Networks", 2018.
    """
    clipped = ops.minimum(ops.relu(x), alpha)
    levels = float(2**bits - 1)
    step = ops.stop_gradient(ops.maximum(alpha, 1e-6)) / levels
    quantized = ops.floor(clipped / step + 0.5) * step
    return clipped + ops.stop_gradient(quantized - clipped)
