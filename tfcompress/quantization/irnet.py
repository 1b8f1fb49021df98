"""IR-Net: Libra-PB weight binarization and the EDE pseudo-gradient, with its schedule.

IR-Net (Qin et al., CVPR 2020) binarizes in two parts, both here:

* **Libra-PB** (weights, :class:`LibraPBSign`, preset ``"irnet"``): per output
  channel the latent weights are balanced (mean subtracted) and standardized
  (divided by their standard deviation) before the sign, so each channel's
  binary weights are about half +1, half -1 (maximum information entropy);
  the result is scaled by a power of two computed from the standardized
  weights (a bit shift at inference).
* **EDE**, the Error Decay Estimator (weights and activations;
  :class:`IRNetSign`, preset ``"irnet_sign"``, is the plain sign with it):
  the sign's gradient is that of ``k tanh(t x)``, whose temperature ``t``
  rises from ``T_min = 0.1`` (an identity-like straight-through estimator,
  every weight updated) to ``T_max = 10`` (close to the sign's own
  derivative) over training.

The training progress that drives ``t`` is quantizer state on the layer, as
for every tfcompress quantizer: :meth:`build` creates a non-trainable float32
``<role>_progress`` variable (0 at start) with ``layer.add_weight``, and the
:class:`IRNetSchedule` callback sets it before every batch from the
optimizer's step count. So it is read inside the compiled train step (no
retrace), works on TensorFlow and JAX, is saved with the layer, and resumes
from a checkpoint. The forward values do not depend on it (inference and
export are unaffected).

Example:
    >>> model = tfc.models.digits_binary_cnn(kernel_quantizer="irnet",
    ...                                      input_quantizer="irnet_sign")
    >>> tfc.models.train_classifier(model, data, epochs=15, learning_rate=1e-2,
    ...                             callbacks=[IRNetSchedule()])

References:
    Qin et al., "Forward and Backward Information Retention for Accurate
    Binary Neural Networks", CVPR 2020 (arXiv:1909.10788); the official code,
    github.com/htqin/IR-Net.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from tfcompress.quantization import binary_ops
from tfcompress.quantization import ops as q
from tfcompress.quantization.schedule import (
    ProgressQuantizer,
    QuantizerSchedule,
    progress_variables,
)

__all__ = [
    "T_MAX",
    "T_MIN",
    "IRNetSchedule",
    "IRNetSign",
    "LibraPBSign",
    "check_temperatures",
    "ede_sign",
    "ede_slope",
    "ede_temperature",
    "libra_pb_sign",
    "power_of_two_scale",
    "progress_variables",
    "standardize",
]

T_MIN = 0.1
T_MAX = 10.0

# Floor of a channel's variance: a channel of equal weights standardizes to
# zeros (sign +1) instead of 0/0.
_MIN_VARIANCE = 1e-12

_register = keras.saving.register_keras_serializable(package="tfcompress")


def check_temperatures(t_min: float, t_max: float) -> None:
    """Raises ValueError unless ``0 < t_min <= t_max`` (finite numbers)."""
    for name, value in (("t_min", t_min), ("t_max", t_max)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError(f"{name} must be a finite number > 0, got {name}={value!r}")
    if t_max < t_min:
        raise ValueError(f"t_max must be >= t_min, got t_min={t_min!r}, t_max={t_max!r}")


def ede_temperature(progress, t_min: float = T_MIN, t_max: float = T_MAX):
    """EDE's ``(t, k)`` at ``progress`` in [0, 1] (float32 tensors).

    ``t = t_min * 10^(progress * log10(t_max / t_min))`` (log-linear from
    ``t_min`` to ``t_max``) and ``k = max(1 / t, 1)``.
    """
    check_temperatures(t_min, t_max)
    progress = ops.cast(ops.convert_to_tensor(progress), "float32")
    t = t_min * ops.power(10.0, progress * math.log10(t_max / t_min))
    return t, ops.maximum(1.0 / t, 1.0)


def ede_slope(x, progress, t_min: float = T_MIN, t_max: float = T_MAX):
    """EDE's pseudo-derivative of the sign: ``d/dx [k tanh(t x)] = k t (1 - tanh^2(t x))``."""
    x = ops.convert_to_tensor(x)
    t, k = ede_temperature(progress, t_min, t_max)
    t, k = ops.cast(t, x.dtype), ops.cast(k, x.dtype)
    return k * t * (1.0 - ops.square(ops.tanh(t * x)))


def ede_sign(x, progress, t_min: float = T_MIN, t_max: float = T_MAX):
    """Sign with IR-Net's Error Decay Estimator (the activations' binarization).

    Forward: ``q(x) = +1 if x >= 0 else -1``.
    Gradient: ``dq/dx = k t (1 - tanh^2(t x))`` with ``(t, k)`` from
    :func:`ede_temperature` at ``progress``.

    References:
        Qin et al., "Forward and Backward Information Retention for Accurate
        Binary Neural Networks", CVPR 2020.
    """
    x = ops.convert_to_tensor(x)
    slope = ede_slope(x, progress, t_min, t_max)
    return binary_ops.with_gradient(binary_ops.sign(x), x, slope)


def _reduce_axes(ndim: int, channel_axis: int | None) -> list[int]:
    if channel_axis is None or ndim == 0:
        return list(range(ndim))
    return [a for a in range(ndim) if a != channel_axis % ndim]


def standardize(x, channel_axis: int | None = -1):
    """Libra-PB's balanced, standardized weights ``(x - mean) / std`` per channel (float32).

    ``std`` is the population standard deviation (``ddof=0``). A channel whose
    variance is at most ``1e-12`` (equal values, up to float rounding of the
    mean) gives zeros, so its signs are all +1. Differentiable.
    """
    x = ops.cast(ops.convert_to_tensor(x), "float32")
    axes = _reduce_axes(len(x.shape), channel_axis)
    centered = x - ops.mean(x, axis=axes, keepdims=True)
    variance = ops.mean(ops.square(centered), axis=axes, keepdims=True)
    # The floor keeps both branches finite (and their gradients: no NaN from where).
    standardized = centered / ops.sqrt(ops.maximum(variance, _MIN_VARIANCE))
    return ops.where(ops.greater(variance, _MIN_VARIANCE), standardized, 0.0)


def power_of_two_scale(standardized, channel_axis: int | None = -1):
    """``2^round(log2(mean|z|))`` per channel of the standardized ``z`` (1 where all are 0)."""
    z = ops.stop_gradient(ops.convert_to_tensor(standardized))
    mean_abs = ops.mean(ops.abs(z), axis=_reduce_axes(len(z.shape), channel_axis), keepdims=True)
    positive = ops.greater(mean_abs, 0.0)
    exponent = ops.round(ops.log2(ops.where(positive, mean_abs, ops.ones_like(mean_abs))))
    return ops.power(2.0, exponent)


def libra_pb_sign(
    x, progress, channel_axis: int | None = -1, t_min: float = T_MIN, t_max: float = T_MAX
):
    """IR-Net's weight binarization: Libra-PB forward, EDE backward.

    Forward, per channel (every axis but ``channel_axis`` is reduced):
    ``z = (x - mean(x)) / std(x)``, ``s = 2^round(log2(mean|z|))`` and
    ``q(x) = s * sign(z)``.
    Gradient: ``dq/dz = s * k t (1 - tanh^2(t z))`` (EDE, ``s`` a constant),
    then back through the standardization (mean and std are differentiated,
    as in the official code).

    Returns:
        ``q(x)`` in ``x``'s dtype: exactly ``+-s`` per channel.

    References:
        Qin et al., "Forward and Backward Information Retention for Accurate
        Binary Neural Networks", CVPR 2020.
    """
    x = ops.convert_to_tensor(x)
    z = standardize(x, channel_axis)
    scale = power_of_two_scale(z, channel_axis)
    quantized = scale * ede_sign(z, progress, t_min, t_max)
    return ops.cast(quantized, x.dtype)


class _EDEQuantizer(ProgressQuantizer):
    """What both IR-Net quantizers share: the temperatures (the progress state is inherited)."""

    def __init__(self, t_min: float = T_MIN, t_max: float = T_MAX) -> None:
        super().__init__()
        check_temperatures(t_min, t_max)
        self.t_min = float(t_min)
        self.t_max = float(t_max)

    def temperature(self, progress) -> tuple[float, float]:
        """``(t, k)`` at ``progress`` as Python floats."""
        t, k = ede_temperature(progress, self.t_min, self.t_max)
        return float(ops.convert_to_numpy(t)), float(ops.convert_to_numpy(k))

    def get_config(self) -> dict[str, Any]:
        return {"t_min": self.t_min, "t_max": self.t_max}


@_register
class IRNetSign(_EDEQuantizer):
    """Binarizes activations to +-1 with IR-Net's Error Decay Estimator.

    Forward: ``q(x) = +1 if x >= 0 else -1``. Pseudo-gradient:
    ``dq/dx = k t (1 - tanh^2(t x))``, the derivative of ``k tanh(t x)``, with
    ``t = t_min * 10^(p log10(t_max / t_min))`` and ``k = max(1/t, 1)`` at
    training progress ``p`` in [0, 1]. At ``p = 0`` (``t = 0.1``, ``k = 10``)
    it is about 1 everywhere (a straight-through estimator without clipping);
    at ``p = 1`` (``t = 10``, ``k = 1``) a peak of height 10 and width ~0.2
    around 0, close to the sign's own derivative.

    ``p`` is state on the layer (a non-trainable float32 ``<role>_progress``
    variable, 0 at start) set by :class:`IRNetSchedule`; without that
    callback the gradient stays at ``p = 0``.

    Args:
        t_min: Temperature at the start of training (> 0).
        t_max: Temperature at the end (>= ``t_min``).

    Raises:
        ValueError: If ``t_min``/``t_max`` are not numbers with
            ``0 < t_min <= t_max``.

    Example:
        >>> layer = tfc.layers.BinaryConv2D(64, 3, kernel_quantizer="irnet",
        ...                                 input_quantizer="irnet_sign")
        >>> model.fit(x, y, callbacks=[IRNetSchedule()])

    References:
        Qin et al., "Forward and Backward Information Retention for Accurate
        Binary Neural Networks", CVPR 2020 (arXiv:1909.10788).
    """

    def call(self, x, state, training):
        return ede_sign(x, self._progress(state), self.t_min, self.t_max)


@_register
class LibraPBSign(_EDEQuantizer):
    """IR-Net weights: Libra-PB (balanced, standardized sign, power-of-two scale) with EDE.

    Forward, per output channel ``c`` (the last kernel axis by default):
    ``z = (w - mean_c(w)) / std_c(w)``, then ``q(w) = 2^round(log2(mean_c|z|)) * sign(z)``.
    Subtracting the mean balances each channel's signs (maximum entropy);
    dividing by the standard deviation makes the weights' scale irrelevant.

    **Variant.** This is the power-of-two scale of the paper (its
    ``Q_w = B_w << >> s`` with ``s = round(log2(||w_std||_1 / n))``) and of
    the official code: the shift is computed on the *standardized* weights,
    held constant in the backward pass, and the sign's gradient flows back
    through the mean and standard deviation. It was chosen over a real-valued
    XNOR-style scale because the paper uses it (a bit shift, no float
    multiply at inference) and because after standardization ``mean|z|`` is
    at most 1 (and 0.8 for Gaussian weights), so the shift is almost always
    ``2^0 = 1``, sometimes ``2^-1`` for heavy-tailed channels: a real scale
    would add nothing the following BatchNorm cannot absorb. The standard
    deviation is the population one (``ddof=0``; the official PyTorch code
    uses the unbiased one: the signs are the same, the shift can differ only
    at a rounding boundary).

    Pseudo-gradient: ``dq/dz = s * k t (1 - tanh^2(t z))`` (EDE, see
    :class:`IRNetSign`), chained through the standardization to ``w``.

    Args:
        channel_axis: The axis with one mean, deviation and shift per entry
            (``None``: one for the whole tensor).
        t_min: Temperature at the start of training (> 0).
        t_max: Temperature at the end (>= ``t_min``).

    Raises:
        ValueError: For bad temperatures; (at build) a ``channel_axis``
            outside the kernel's rank.

    Example:
        >>> layer = tfc.layers.BinaryDense(128, kernel_quantizer="irnet",
        ...                                input_quantizer="irnet_sign")
        >>> model.fit(x, y, callbacks=[IRNetSchedule()])

    References:
        Qin et al., "Forward and Backward Information Retention for Accurate
        Binary Neural Networks", CVPR 2020 (arXiv:1909.10788).
    """

    scaled = True

    def __init__(
        self, channel_axis: int | None = -1, t_min: float = T_MIN, t_max: float = T_MAX
    ) -> None:
        super().__init__(t_min, t_max)
        if channel_axis is not None and (
            isinstance(channel_axis, bool) or not isinstance(channel_axis, int)
        ):
            raise ValueError(f"channel_axis must be None or an integer, got {channel_axis!r}")
        self.channel_axis = channel_axis

    def build(self, layer, shape, name):
        q.validate_axis(self.channel_axis, tuple(shape), f"{type(self).__name__} of {name!r}")
        return super().build(layer, shape, name)

    def call(self, x, state, training):
        return libra_pb_sign(x, self._progress(state), self.channel_axis, self.t_min, self.t_max)

    def get_config(self) -> dict[str, Any]:
        return {"channel_axis": self.channel_axis, **super().get_config()}


@_register
class IRNetSchedule(QuantizerSchedule):
    """:class:`~tfcompress.quantization.schedule.QuantizerSchedule` under IR-Net's name.

    Drives the EDE temperature of every IR-Net quantizer (and every other
    progress-scheduled quantizer) exactly as ``QuantizerSchedule`` does; kept so
    code and saved configs that name it keep working.

    Example:
        >>> model = tfc.models.digits_binary_cnn(kernel_quantizer="irnet",
        ...                                      input_quantizer="irnet_sign")
        >>> model.fit(x, y, epochs=15, callbacks=[IRNetSchedule()])

    References:
        Qin et al., "Forward and Backward Information Retention for Accurate
        Binary Neural Networks", CVPR 2020 (Sec. 3.3, Error Decay Estimator).
    """
