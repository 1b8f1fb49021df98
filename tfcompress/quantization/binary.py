"""Binary, ternary and DoReFa quantizers: the low-bit branch of the one quantizer hierarchy.

Every class here derives from :class:`tfcompress.quantization.base.Quantizer`
(through :class:`BinaryQuantizer` for the +-1 and ternary ones) and follows its
protocol: ``q(x)`` applies the forward function of
:mod:`tfcompress.quantization.binary_ops` with its pseudo-gradient; TTQ's
learned scales are state created on the layer by ``build(layer, shape, name)``
and passed back as ``q(x, state)``, as for LSQ. The names ``"ste_sign"``,
``"ttq"``, ... are presets of the one registry (:func:`tfcompress.quantizers.get`).

Attributes the layers, the packed storage and the summary read:

* ``bits``: bits per value once packed (1 binary, 2 ternary, ``k`` DoReFa);
* ``pack_kind``: ``"binary"``, ``"ternary"`` or ``None`` (not packable);
* ``scaled``: whether the output carries a per-channel scale.
"""

from __future__ import annotations

from typing import Any

import keras

from tfcompress.quantization import binary_ops
from tfcompress.quantization.base import Quantizer

__all__ = [
    "TTQ",
    "ApproxSign",
    "BinaryQuantizer",
    "DoReFa",
    "MagnitudeAwareSign",
    "SteSign",
    "SteTern",
    "SwishSign",
]

_register = keras.saving.register_keras_serializable(package="tfcompress")


class BinaryQuantizer(Quantizer):
    """Base class of the binary (+-1) and ternary quantizers.

    A :class:`~tfcompress.quantization.base.Quantizer` with a fixed bit width
    (1 here, 2 for the ternary subclasses) whose output can be packed
    (``pack_kind``). Subclasses implement :meth:`call` and :meth:`get_config`
    (their constructor arguments; ``bits`` is implied by the class).

    Example:
        >>> q = tfc.quantizers.get("ste_sign")
        >>> keras.ops.convert_to_numpy(q(keras.ops.array([-0.3, 0.0, 2.0])))
        array([-1.,  1.,  1.], dtype=float32)
    """

    min_bits = 1
    max_bits = 1
    pack_kind = "binary"

    def __init__(self) -> None:
        super().__init__(self.min_bits)

    def get_config(self) -> dict[str, Any]:
        return {}


@_register
class SteSign(BinaryQuantizer):
    """Binarizes to +-1 with the clipped straight-through estimator.

    Forward: ``q(x) = +1 if x >= 0 else -1``. Gradient: 1 where
    ``|x| <= clip_value`` (edge included), else 0.

    Args:
        clip_value: Where the gradient is cut off (``None``: never).

    Example:
        >>> SteSign()(keras.ops.convert_to_tensor([-0.3, 0.0, 2.0]))  # [-1, 1, 1]

    References:
        Courbariaux et al., "Binarized Neural Networks", 2016.
    """

    def __init__(self, clip_value: float | None = 1.0) -> None:
        super().__init__()
        binary_ops.check_clip_value(clip_value)
        self.clip_value = clip_value

    def call(self, x, state, training):
        return binary_ops.ste_sign(x, self.clip_value)

    def get_config(self) -> dict[str, Any]:
        return {"clip_value": self.clip_value}


@_register
class ApproxSign(BinaryQuantizer):
    """Binarizes to +-1 with Bi-Real Net's gradient ``2 - 2|x|`` on ``|x| <= 1``.

    Example:
        >>> ApproxSign()(x)

    References:
        Liu et al., "Bi-Real Net", ECCV 2018.
    """

    def call(self, x, state, training):
        return binary_ops.approx_sign(x)


@_register
class SwishSign(BinaryQuantizer):
    """Binarizes to +-1 with the SignSwish gradient of BNN+.

    Gradient: ``beta (2 - beta x tanh(beta x / 2)) / (1 + cosh(beta x))``.

    Args:
        beta: Sharpness (> 0); larger is closer to the sign's true derivative.

    Example:
        >>> SwishSign(beta=10.0)(x)

    References:
        Darabi et al., "BNN+", 2018.
    """

    def __init__(self, beta: float = 5.0) -> None:
        super().__init__()
        if not (isinstance(beta, (int, float)) and beta > 0):
            raise ValueError(f"beta must be a number > 0, got {beta!r}")
        self.beta = float(beta)

    def call(self, x, state, training):
        return binary_ops.swish_sign(x, self.beta)

    def get_config(self) -> dict[str, Any]:
        return {"beta": self.beta}


@_register
class MagnitudeAwareSign(BinaryQuantizer):
    """XNOR-Net weights: ``alpha_c * sign(x)``, ``alpha_c`` the channel's mean ``|x|``.

    Gradient: ``alpha_c`` where ``|x| <= clip_value``, else 0.

    Args:
        clip_value: Where the gradient is cut off (``None``: never).
        channel_axis: The axis with one scale per entry (``None``: one scale).

    Example:
        >>> BinaryConv2D(64, 3, kernel_quantizer="magnitude_aware_sign")

    References:
        Rastegari et al., "XNOR-Net", ECCV 2016.
    """

    scaled = True

    def __init__(self, clip_value: float | None = 1.0, channel_axis: int | None = -1) -> None:
        super().__init__()
        binary_ops.check_clip_value(clip_value)
        self.clip_value = clip_value
        self.channel_axis = channel_axis

    def call(self, x, state, training):
        return binary_ops.magnitude_aware_sign(x, self.clip_value, self.channel_axis)

    def get_config(self) -> dict[str, Any]:
        return {"clip_value": self.clip_value, "channel_axis": self.channel_axis}


@_register
class SteTern(BinaryQuantizer):
    """Ternary Weight Networks: ``{-alpha_c, 0, +alpha_c}``.

    Forward: entries with ``|x| > threshold * mean(|x|)`` keep their sign,
    the rest are 0; ``alpha_c`` is the mean magnitude of the kept entries.
    Gradient: ``alpha_c`` where ``|x| <= clip_value``, else 0.

    Args:
        threshold: Fraction of the mean magnitude, in (0, 1) (TWN uses 0.7).
        clip_value: Where the gradient is cut off (``None``: never).
        channel_axis: The axis with one scale per entry (``None``: one scale).

    Raises:
        ValueError: If ``threshold`` is not in (0, 1).

    Example:
        >>> BinaryDense(64, kernel_quantizer=SteTern(threshold=0.7))

    References:
        Li, Zhang and Liu, "Ternary Weight Networks", 2016.
    """

    min_bits = 2
    max_bits = 2
    pack_kind = "ternary"
    scaled = True

    def __init__(
        self, threshold: float = 0.7, clip_value: float | None = 1.0, channel_axis: int | None = -1
    ) -> None:
        super().__init__()
        binary_ops.check_threshold(threshold)
        binary_ops.check_clip_value(clip_value)
        self.threshold = float(threshold)
        self.clip_value = clip_value
        self.channel_axis = channel_axis

    def call(self, x, state, training):
        return binary_ops.ternarize(x, self.threshold, self.clip_value, self.channel_axis)

    def get_config(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "clip_value": self.clip_value,
            "channel_axis": self.channel_axis,
        }


@_register
class TTQ(BinaryQuantizer):
    """Trained Ternary Quantization: ``{-W_n, 0, +W_p}`` with learned per-channel scales.

    Forward: ``+W_p`` above ``threshold * max|x|``, ``-W_n`` below its
    negative, 0 between. Gradients: see :func:`tfcompress.quantization.binary_ops.ttq`
    (the scales learn from the sum of the gradients of their entries).

    The scales ``W_p``, ``W_n`` (one per output channel, the last axis) are
    state on the layer, as for every quantizer: :meth:`build` creates them
    with ``layer.add_weight`` and returns ``{"positive_scale",
    "negative_scale"}``; the layer passes that dict back at each call. One TTQ
    object can serve several layers, each with its own scales.

    Args:
        threshold: Fraction of the channel's max magnitude, in (0, 1).
        initial_scale: Initial ``W_p`` and ``W_n``.

    Raises:
        ValueError: If ``threshold`` is not in (0, 1) or ``initial_scale <= 0``;
            (at build) if the last axis has unknown size.

    Example:
        >>> BinaryConv2D(32, 3, kernel_quantizer="ttq")

    References:
        Zhu et al., "Trained Ternary Quantization", ICLR 2017.
    """

    min_bits = 2
    max_bits = 2
    pack_kind = "ternary"
    scaled = True
    stateful = True

    def __init__(self, threshold: float = 0.05, initial_scale: float = 1.0) -> None:
        super().__init__()
        binary_ops.check_threshold(threshold)
        if not (isinstance(initial_scale, (int, float)) and initial_scale > 0):
            raise ValueError(f"initial_scale must be a number > 0, got {initial_scale!r}")
        self.threshold = float(threshold)
        self.initial_scale = float(initial_scale)

    def build(self, layer, shape, name):
        channels = tuple(shape)[-1] if len(shape) else None
        if channels is None:
            raise ValueError(f"TTQ of {name!r} needs a known last axis, got shape {tuple(shape)}")

        def scale(sign):
            return layer.add_weight(
                name=f"{name}_{sign}_scale",
                shape=(channels,),
                initializer=keras.initializers.Constant(self.initial_scale),
            )

        return {"positive_scale": scale("positive"), "negative_scale": scale("negative")}

    def call(self, x, state, training):
        return binary_ops.ttq(
            x, state["positive_scale"].value, state["negative_scale"].value, self.threshold
        )

    def get_config(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "initial_scale": self.initial_scale}


@_register
class DoReFa(Quantizer):
    """DoReFa-Net k-bit quantization of activations (``[0, 1]``) or weights (``[-1, 1]``).

    See :func:`tfcompress.quantization.binary_ops.dorefa` for the forward function and
    gradient. Not packable by :mod:`tfcompress.binary.store` (``pack_kind`` is None).

    Args:
        k_bit: Bits, an integer in [1, 16].
        mode: ``"activations"`` or ``"weights"``.

    Raises:
        ValueError: For a bad ``k_bit`` or ``mode``.

    Example:
        >>> BinaryDense(64, input_quantizer=DoReFa(2), kernel_quantizer="ste_sign")

    References:
        Zhou et al., "DoReFa-Net", 2016.
    """

    min_bits = 1
    max_bits = 16

    def __init__(self, k_bit: int = 2, mode: str = "activations") -> None:
        binary_ops.check_dorefa(k_bit, mode)
        super().__init__(k_bit)
        self.k_bit = k_bit
        self.mode = mode

    def call(self, x, state, training):
        return binary_ops.dorefa(x, self.k_bit, self.mode)

    def get_config(self) -> dict[str, Any]:
        return {"k_bit": self.k_bit, "mode": self.mode}
