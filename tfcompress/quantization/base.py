"""The one base class of every tfcompress quantizer: uniform, learned, binary, ternary.

A quantizer is a small, serializable *description* of a fake quantization
(bits, grid, how the range or scale is found, its pseudo-gradient). It holds no
tensors. State that some quantizers need (moving min/max, LSQ step sizes, PACT
alpha, TTQ scales) lives on the layer that uses the quantizer:

    state = quantizer.build(layer, shape, name="kernel")   # in layer.build
    quantizer.initialize(state, kernel)                      # optional, from values
    y = quantizer(x, state, training=training)               # in layer.call

``build`` creates the variables with ``layer.add_weight`` and returns them in a
dict (``{}`` for stateless quantizers); the layer keeps that dict per role
(:class:`tfcompress.quantization.layer_base.QuantizerStateMixin`) and hands it
back at every call. So the state is tracked, trained, checkpointed and saved
with the layer's own variables, in one way for every quantizer, and one
quantizer object can be shared by several layers and roles.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras

from tfcompress.quantization.ops import validate_bits

__all__ = ["Quantizer", "scalar_state"]


def scalar_state(layer: keras.layers.Layer, name: str) -> keras.Variable:
    """A non-trainable float32 scalar (0 at start) on ``layer``: a flag or a progress.

    Quantizer state stays float32 under mixed precision (no autocast to float16).
    """
    return layer.add_weight(
        name=name,
        shape=(),
        initializer="zeros",
        trainable=False,
        dtype="float32",
        autocast=False,
    )


class Quantizer(keras.quantizers.Quantizer):
    """Base class of all tfcompress quantizers (subclass it for new schemes).

    **Where state lives.** On the layer, not on the quantizer: :meth:`build`
    creates the variables with ``layer.add_weight`` and returns them by role,
    the layer stores the dict and passes it to every call. A quantizer object
    therefore stays a pure description: equal configs mean equal quantizers,
    :func:`tfcompress.quantizers.serialize` saves all of it, and one object may
    serve several layers (each gets its own variables). The layer saves and
    restores the state with its other variables (``.keras`` files, checkpoints).

    A subclass sets ``min_bits``/``max_bits`` (or passes a fixed ``bits``),
    implements :meth:`call` and, if it keeps state, :meth:`build` (and
    :meth:`initialize`) with ``stateful = True``. It is registered with
    ``@keras.saving.register_keras_serializable(package="tfcompress")`` and
    returns every constructor argument from :meth:`get_config`.

    Class attributes read by the layers, packed storage and the summary:

    * ``stateful``: :meth:`build` creates variables;
    * ``pack_kind``: ``"binary"``/``"ternary"`` when the output can be stored
      1/2 bits per value with per-channel scales, else ``None``;
    * ``scaled``: the output carries a scale derived from the values (so its
      levels are not exactly ``{-1, 0, +1}``).

    Args:
        bits: Bits per quantized value, in ``[min_bits, max_bits]``.

    Raises:
        ValueError: If ``bits`` is outside ``[min_bits, max_bits]``.

    Example:
        >>> q = tfc.quantizers.get("int8")          # a preset
        >>> layer = tfc.layers.QuantDense(16, kernel_quantizer=q)
        >>> tfc.quantizers.deserialize(tfc.quantizers.serialize(q)) == q
        True
    """

    min_bits: ClassVar[int] = 1
    max_bits: ClassVar[int] = 8
    stateful: ClassVar[bool] = False
    pack_kind: ClassVar[str | None] = None
    scaled: ClassVar[bool] = False

    def __init__(self, bits: int = 8) -> None:
        super().__init__(output_dtype=None)
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
            name: The role, prefix of the variable names (e.g. ``"kernel"``).

        Returns:
            The variables by role (empty for stateless quantizers).

        Raises:
            ValueError: If the quantizer cannot apply to ``shape`` (e.g. an
                out-of-range channel axis).
        """
        return {}

    def initialize(self, state: dict[str, keras.Variable], x: Any) -> None:
        """Sets ``state`` from concrete values ``x`` (e.g. a copied kernel); no-op by default."""

    def call(self, x: Any, state: dict[str, keras.Variable], training: bool) -> Any:
        """Returns the fake-quantized ``x``; training mode may update ``state``."""
        raise NotImplementedError

    def __call__(
        self, x: Any, state: dict[str, keras.Variable] | None = None, training: bool = False
    ) -> Any:
        if self.stateful and not state:
            raise ValueError(
                f"{self!r} keeps state on its layer: pass the dict its build(layer, shape, "
                "name) returned as state=..."
            )
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
