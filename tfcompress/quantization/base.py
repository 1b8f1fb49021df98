"""The quantizer protocol every tfcompress quantizer follows.

A quantizer is a small, serializable *description* of a fake quantization
(bits, grid, how the range is found). It holds no tensors itself: state such
as moving min/max or a learned step belongs to the layer that uses it, so it
is tracked, trained, checkpointed and saved with that layer. The protocol::

    state = quantizer.build(layer, shape, name="kernel")   # in layer.build
    quantizer.initialize(state, kernel)                      # optional, from values
    y = quantizer(x, state, training=training)               # in layer.call

``build`` creates variables with ``layer.add_weight`` and returns them in a
dict; stateless quantizers return ``{}``.
"""

from __future__ import annotations

from typing import Any

import keras

__all__ = ["Quantizer"]


class Quantizer:
    """Base class of tfcompress quantizers (subclass it for new schemes).

    Subclasses set ``min_bits``/``max_bits``, implement :meth:`call` and, if
    they keep state, :meth:`build` (and :meth:`initialize`). They must be
    registered with ``@keras.saving.register_keras_serializable(package=
    "tfcompress")`` and return every constructor argument from
    :meth:`get_config`.

    Args:
        bits: Bits per quantized value.

    Raises:
        ValueError: If ``bits`` is outside ``[min_bits, max_bits]``.

    Example:
        >>> q = tfc.quantizers.get("int8")          # a Quantizer preset
        >>> layer = tfc.layers.QuantDense(16, kernel_quantizer=q)
        >>> tfc.quantizers.deserialize(tfc.quantizers.serialize(q)).get_config() == q.get_config()
        True
    """

    min_bits: int = 1
    max_bits: int = 8

    def __init__(self, bits: int = 8) -> None:
        from tfcompress.quantization.ops import validate_bits

        self.bits = validate_bits(bits, self.min_bits, self.max_bits, type(self).__name__)

    # -- the layer-facing protocol -------------------------------------------------

    def build(
        self, layer: keras.layers.Layer, shape: tuple[int | None, ...], name: str
    ) -> dict[str, keras.Variable]:
        """Creates the quantizer's state variables on ``layer``.

        Args:
            layer: The owning layer; variables are made with ``layer.add_weight``
                so they are tracked and saved with it.
            shape: Shape of the tensor this quantizer will see (batch dimension
                ``None`` for activations).
            name: Prefix for the variable names (e.g. ``"kernel"``).

        Returns:
            The variables by role (empty for stateless quantizers).

        Raises:
            ValueError: If the quantizer cannot apply to ``shape`` (e.g. an
                out-of-range channel axis).
        """
        return {}

    def initialize(self, state: dict[str, keras.Variable], x: Any) -> None:
        """Sets ``state`` from concrete values ``x`` (e.g. a copied kernel)."""

    def call(self, x: Any, state: dict[str, keras.Variable], training: bool) -> Any:
        """Returns the fake-quantized ``x``; training mode may update ``state``."""
        raise NotImplementedError

    def __call__(
        self, x: Any, state: dict[str, keras.Variable] | None = None, training: bool = False
    ) -> Any:
        return self.call(x, state if state is not None else {}, bool(training))

    # -- description ---------------------------------------------------------------

    @property
    def bits_per_value(self) -> float:
        """Bits one quantized value occupies when stored."""
        return float(self.bits)

    def get_config(self) -> dict[str, Any]:
        return {"bits": self.bits}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Quantizer:
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(sorted(self.get_config().items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
