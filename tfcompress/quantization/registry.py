"""The one quantizer registry: named presets, ``get`` / ``serialize`` / ``deserialize``.

Every quantizer (uniform, learned, binary, ternary, DoReFa) is a
:class:`~tfcompress.quantization.base.Quantizer` registered with Keras under
package ``"tfcompress"``; this module names the presets and resolves any
identifier (preset, class name, config dict, instance) to one of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from tfcompress.quantization.base import Quantizer
from tfcompress.quantization.binary import (
    TTQ,
    ApproxSign,
    DoReFa,
    MagnitudeAwareSign,
    SteSign,
    SteTern,
    SwishSign,
)
from tfcompress.quantization.irnet import IRNetSign, LibraPBSign
from tfcompress.quantization.learned import LSQQuantizer, PACTQuantizer
from tfcompress.quantization.lqnet import LQNetQuantizer
from tfcompress.quantization.relaxed import MirrorTanhSign
from tfcompress.quantization.uniform import MinMaxQuantizer, MovingAverageQuantizer

__all__ = ["PRESETS", "deserialize", "get", "register_preset", "serialize"]

QuantizerLike = Quantizer | str | dict[str, Any] | None

PRESETS: dict[str, Callable[[], Quantizer]] = {
    # Weights: symmetric, zero point 0, range from the kernel itself.
    "int8": lambda: MinMaxQuantizer(8),
    "int8_per_channel": lambda: MinMaxQuantizer(8, axis=-1),
    "int4": lambda: MinMaxQuantizer(4),
    "int4_per_channel": lambda: MinMaxQuantizer(4, axis=-1),
    "int2_per_channel": lambda: MinMaxQuantizer(2, axis=-1),
    "int8_pow2": lambda: MinMaxQuantizer(8, power_of_two=True),
    "int8_per_channel_pow2": lambda: MinMaxQuantizer(8, axis=-1, power_of_two=True),
    # Weights with a learned step (LSQ).
    "int8_lsq": lambda: LSQQuantizer(8),
    "int4_lsq": lambda: LSQQuantizer(4),
    "int4_lsq_per_channel": lambda: LSQQuantizer(4, axis=-1),
    # Activations: moving-average range, learned step, or PACT clipping.
    "int8_activation": lambda: MovingAverageQuantizer(8),
    "int16_activation": lambda: MovingAverageQuantizer(16, symmetric=True),
    "int8_lsq_activation": lambda: LSQQuantizer(8, signed=False),
    "int8_pact": lambda: PACTQuantizer(8),
    "int4_pact": lambda: PACTQuantizer(4),
    # LQ-Nets: levels spanned by a basis fitted to the values (QEM), per channel for kernels.
    "lqnet2": lambda: LQNetQuantizer(2, "weights", axis=-1),
    "lqnet2_activation": lambda: LQNetQuantizer(2, "activations"),
    # Binary (+-1) and ternary kernels/inputs, and DoReFa k-bit.
    "ste_sign": SteSign,
    "approx_sign": ApproxSign,
    "swish_sign": SwishSign,
    "magnitude_aware_sign": MagnitudeAwareSign,
    "ste_tern": SteTern,
    "ternary": SteTern,
    "twn": SteTern,
    "ttq": TTQ,
    "dorefa": DoReFa,
    # IR-Net (Libra-PB weights, EDE gradient; drive it with IRNetSchedule).
    "irnet": LibraPBSign,
    "irnet_sign": IRNetSign,
    # Mirror descent with the tanh mirror map (drive it with QuantizerSchedule).
    "md_tanh": MirrorTanhSign,
}


def register_preset(name: str, factory: Callable[[], Quantizer]) -> None:
    """Adds a preset so ``get(name)`` returns ``factory()``.

    Raises:
        ValueError: If ``name`` is already a preset.

    Example:
        >>> tfc.quantizers.register_preset(
        ...     "int6_lsq", lambda: tfc.quantizers.LSQQuantizer(bits=6))
        >>> layer = tfc.layers.QuantDense(8, kernel_quantizer="int6_lsq")
    """
    key = name.lower()
    if key in PRESETS:
        raise ValueError(f"quantizer preset {name!r} already exists")
    PRESETS[key] = factory


def serialize(quantizer: Quantizer | None) -> dict[str, Any] | None:
    """A quantizer's Keras-serializable config (``None`` stays ``None``).

    Example:
        >>> config = tfc.quantizers.serialize(tfc.quantizers.get("int4"))
        >>> quantizer = tfc.quantizers.deserialize(config)
    """
    if quantizer is None:
        return None
    return keras.saving.serialize_keras_object(quantizer)


def deserialize(config: dict[str, Any] | None) -> Quantizer | None:
    """Rebuilds a quantizer from :func:`serialize`'s output.

    Example:
        >>> quantizer = tfc.quantizers.deserialize(
        ...     tfc.quantizers.serialize(tfc.quantizers.get("int8_per_channel")))
    """
    if config is None:
        return None
    quantizer = keras.saving.deserialize_keras_object(config)
    if not isinstance(quantizer, Quantizer):
        raise ValueError(f"config does not describe a tfcompress quantizer: {config!r}")
    return quantizer


def get(identifier: QuantizerLike, argument: str = "quantizer") -> Quantizer | None:
    """Resolves a quantizer from a preset name, a config dict or an instance.

    Args:
        identifier: ``None``, a :class:`Quantizer`, a preset name such as
            ``"int8"``, ``"int8_per_channel"``, ``"int4"``, ``"int8_activation"``,
            ``"int4_lsq"``, ``"int8_pact"``, ``"ste_sign"``, ``"ttq"`` (see
            ``PRESETS``), a quantizer class name (default arguments), or a dict
            from :func:`serialize`.
        argument: The argument's name, for error messages.

    Returns:
        A quantizer, or ``None``.

    Raises:
        ValueError: For an unknown name or an invalid config.
        TypeError: For any other kind of value.

    Example:
        >>> tfcompress.quantizers.get("int4_per_channel")
        MinMaxQuantizer(bits=4, symmetric=True, axis=-1, narrow_range=True, power_of_two=False)
    """
    if identifier is None or isinstance(identifier, Quantizer):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        key = identifier.lower()
        if key in PRESETS:
            return PRESETS[key]()
        cls = keras.saving.get_registered_object(f"tfcompress>{identifier}")
        if isinstance(cls, type) and issubclass(cls, Quantizer):
            return cls()
        raise ValueError(
            f"{argument}={identifier!r} is not a known quantizer; expected one of the presets "
            f"{', '.join(sorted(PRESETS))}, a quantizer class name, a config dict or a "
            "Quantizer instance"
        )
    raise TypeError(
        f"{argument} must be a preset name, a config dict, a Quantizer or None, "
        f"got {type(identifier).__name__}: {identifier!r}"
    )
