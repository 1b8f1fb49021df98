"""Serializable binary, ternary and DoReFa quantizers.

Each quantizer is a small object with a config: ``q(x)`` applies the forward
function of :mod:`tfcompress.quantization.binary_ops` with its pseudo-gradient. They are
registered under package ``"tfcompress"`` and found by name with :func:`get`.

Attributes every quantizer has, used by the layers, the packed storage and
the summary:

* ``bits``: bits per value once packed (1 binary, 2 ternary, ``k`` DoReFa);
* ``pack_kind``: ``"binary"``, ``"ternary"`` or ``None`` (not packable);
* ``scaled``: whether the output carries a per-channel scale.
"""

from __future__ import annotations

from typing import Any

import keras

from tfcompress.quantization import binary_ops as binary_ops

__all__ = [
    "TTQ",
    "ApproxSign",
    "BinaryQuantizer",
    "DoReFa",
    "MagnitudeAwareSign",
    "SteSign",
    "SteTern",
    "SwishSign",
    "deserialize",
    "get",
    "names",
    "serialize",
]

_REGISTRY: dict[str, type[BinaryQuantizer]] = {}


def _register(*names: str):
    def wrap(cls):
        for name in names:
            _REGISTRY[name] = cls
        return keras.saving.register_keras_serializable(package="tfcompress")(cls)

    return wrap


class BinaryQuantizer(keras.quantizers.Quantizer):
    """Base class: a quantizer with a config and a pseudo-gradient.

    Subclasses implement ``__call__`` and ``get_config``. Stateful quantizers
    (learned scales) also implement ``build(layer, shape)``, which creates
    their variables on the layer that uses them.

    Example:
        >>> q = tfc.quantizers.get("ste_sign")
        >>> keras.ops.convert_to_numpy(q(keras.ops.array([-0.3, 0.0, 2.0])))
        array([-1.,  1.,  1.], dtype=float32)
    """

    bits: int = 1
    pack_kind: str | None = "binary"
    scaled: bool = False
    stateful: bool = False

    def __init__(self) -> None:
        super().__init__(output_dtype=None)

    def build(self, layer: keras.layers.Layer, shape: tuple[int, ...]) -> None:
        """Creates the quantizer's variables on ``layer`` (no-op unless stateful)."""

    @property
    def variables(self) -> list:
        """The variables :meth:`build` created (empty unless stateful)."""
        return []

    def get_config(self) -> dict[str, Any]:
        return {}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@_register("ste_sign")
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
        binary_ops._check_clip(clip_value)
        self.clip_value = clip_value

    def __call__(self, x):
        return binary_ops.ste_sign(x, self.clip_value)

    def get_config(self) -> dict[str, Any]:
        return {"clip_value": self.clip_value}


@_register("approx_sign")
class ApproxSign(BinaryQuantizer):
    """Binarizes to +-1 with Bi-Real Net's gradient ``2 - 2|x|`` on ``|x| <= 1``.

    Example:
        >>> ApproxSign()(x)

    References:
        Liu et al., "Bi-Real Net", ECCV 2018.
    """

    def __call__(self, x):
        return binary_ops.approx_sign(x)


@_register("swish_sign")
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

    def __call__(self, x):
        return binary_ops.swish_sign(x, self.beta)

    def get_config(self) -> dict[str, Any]:
        return {"beta": self.beta}


@_register("magnitude_aware_sign")
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
        binary_ops._check_clip(clip_value)
        self.clip_value = clip_value
        self.channel_axis = channel_axis

    def __call__(self, x):
        return binary_ops.magnitude_aware_sign(x, self.clip_value, self.channel_axis)

    def get_config(self) -> dict[str, Any]:
        return {"clip_value": self.clip_value, "channel_axis": self.channel_axis}


@_register("ste_tern", "ternary", "twn")
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

    bits = 2
    pack_kind = "ternary"
    scaled = True

    def __init__(
        self, threshold: float = 0.7, clip_value: float | None = 1.0, channel_axis: int | None = -1
    ) -> None:
        super().__init__()
        binary_ops._check_threshold(threshold)
        binary_ops._check_clip(clip_value)
        self.threshold = float(threshold)
        self.clip_value = clip_value
        self.channel_axis = channel_axis

    def __call__(self, x):
        return binary_ops.ternarize(x, self.threshold, self.clip_value, self.channel_axis)

    def get_config(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "clip_value": self.clip_value,
            "channel_axis": self.channel_axis,
        }


@_register("ttq")
class TTQ(BinaryQuantizer):
    """Trained Ternary Quantization: ``{-W_n, 0, +W_p}`` with learned per-channel scales.

    Forward: ``+W_p`` above ``threshold * max|x|``, ``-W_n`` below its
    negative, 0 between. Gradients: see :func:`tfcompress.quantization.binary_ops.ttq`
    (the scales learn from the sum of the gradients of their entries).

    The scales are variables of the layer using the quantizer, created by
    :meth:`build`; each layer gets its own copy of the quantizer.

    Args:
        threshold: Fraction of the channel's max magnitude, in (0, 1).
        initial_scale: Initial ``W_p`` and ``W_n``.

    Raises:
        ValueError: If ``threshold`` is not in (0, 1) or ``initial_scale <= 0``.

    Example:
        >>> BinaryConv2D(32, 3, kernel_quantizer="ttq")

    References:
        Zhu et al., "Trained Ternary Quantization", ICLR 2017.
    """

    bits = 2
    pack_kind = "ternary"
    scaled = True
    stateful = True

    def __init__(self, threshold: float = 0.05, initial_scale: float = 1.0) -> None:
        super().__init__()
        binary_ops._check_threshold(threshold)
        if not (isinstance(initial_scale, (int, float)) and initial_scale > 0):
            raise ValueError(f"initial_scale must be a number > 0, got {initial_scale!r}")
        self.threshold = float(threshold)
        self.initial_scale = float(initial_scale)
        self.positive_scale = None
        self.negative_scale = None

    def build(self, layer: keras.layers.Layer, shape: tuple[int, ...]) -> None:
        init = keras.initializers.Constant(self.initial_scale)
        self.positive_scale = layer.add_weight(
            name="ttq_positive_scale", shape=(shape[-1],), initializer=init
        )
        self.negative_scale = layer.add_weight(
            name="ttq_negative_scale", shape=(shape[-1],), initializer=init
        )

    @property
    def variables(self) -> list:
        return [] if self.positive_scale is None else [self.positive_scale, self.negative_scale]

    def __call__(self, x):
        if self.positive_scale is None:
            raise ValueError("TTQ has no scales yet: a layer must call build(layer, shape) first")
        return binary_ops.ttq(
            x, self.positive_scale.value, self.negative_scale.value, self.threshold
        )

    def get_config(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "initial_scale": self.initial_scale}


@_register("dorefa")
class DoReFa(BinaryQuantizer):
    """DoReFa-Net k-bit quantization of activations (``[0, 1]``) or weights (``[-1, 1]``).

    See :func:`tfcompress.quantization.binary_ops.dorefa` for the forward function and
    gradient. Not packable by :mod:`tfcompress.packing` (bits > 2).

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

    pack_kind = None

    def __init__(self, k_bit: int = 2, mode: str = "activations") -> None:
        super().__init__()
        binary_ops.dorefa(0.0, k_bit, mode)  # validates
        self.k_bit = k_bit
        self.mode = mode
        self.bits = k_bit

    def __call__(self, x):
        return binary_ops.dorefa(x, self.k_bit, self.mode)

    def get_config(self) -> dict[str, Any]:
        return {"k_bit": self.k_bit, "mode": self.mode}


def names() -> list[str]:
    """The names :func:`get` accepts."""
    return sorted(_REGISTRY)


def get(identifier: str | dict | BinaryQuantizer | None) -> BinaryQuantizer | None:
    """Returns a quantizer from a name, a serialized config or an instance.

    Args:
        identifier: ``None``, a name from :func:`names`, a dict from
            :func:`serialize`, or a :class:`BinaryQuantizer`.

    Returns:
        The quantizer (the same object when an instance is given), or None.

    Raises:
        ValueError: For an unknown name.
        TypeError: For an identifier of another kind.

    Example:
        >>> get("ste_sign")
        SteSign(clip_value=1.0)
    """
    if identifier is None or isinstance(identifier, BinaryQuantizer):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in _REGISTRY:
            raise ValueError(
                f"unknown quantizer name {identifier!r}; expected one of {', '.join(names())}"
            )
        return _REGISTRY[key]()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    raise TypeError(
        "quantizer must be None, a name, a config dict or a BinaryQuantizer, "
        f"got {type(identifier).__name__}: {identifier!r}"
    )


def serialize(quantizer: BinaryQuantizer | None) -> dict | None:
    """The quantizer's ``keras.saving`` config (None for None)."""
    return None if quantizer is None else keras.saving.serialize_keras_object(quantizer)


def deserialize(config: dict | None) -> BinaryQuantizer | None:
    """Inverse of :func:`serialize`."""
    if config is None:
        return None
    quantizer = keras.saving.deserialize_keras_object(config)
    if not isinstance(quantizer, BinaryQuantizer):
        raise TypeError(f"config does not describe a BinaryQuantizer: {config!r}")
    return quantizer


def _register_presets() -> None:
    # Lets tfcompress.quantizers.get (the uniform quantizers' registry) resolve our names too.
    from tfcompress.quantization import registry

    for name, cls in _REGISTRY.items():
        if name not in registry.PRESETS:
            registry.register_preset(name, cls)


_register_presets()
