"""Uniform quantizers whose range is measured: per-tensor/per-channel min-max, moving averages."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from tfcompress.core.replicas import replica_max, replica_min
from tfcompress.quantization import ops as q
from tfcompress.quantization.base import Quantizer

__all__ = ["MinMaxQuantizer", "MovingAverageQuantizer"]


@keras.saving.register_keras_serializable(package="tfcompress")
class MinMaxQuantizer(Quantizer):
    """Uniform fake quantization over the tensor's own current range (for weights).

    Each call takes the range from the values it quantizes (``max|x|`` when
    symmetric, ``[min(x), max(x)]`` otherwise), per tensor or per channel along
    ``axis``. It keeps no state, so the range always follows the kernel as it
    trains, and at export the converter folds the range of the frozen kernel.

    Forward: ``fake_quant(x, lo, hi, bits)`` (see
    :func:`tfcompress.quantization.ops.fake_quant`). Pseudo-gradient: straight
    through (``d/dx = 1``; the range is not differentiated).

    Args:
        bits: Bits per value, 2 to 8.
        symmetric: Symmetric signed grid with zero point 0 (what TFLite wants
            for int8 weights), else an asymmetric grid over ``[min, max]``.
        axis: Channel axis for per-channel ranges (``-1`` for the output
            channels of Dense/Conv kernels) or ``None`` for one range.
        narrow_range: Drop the most negative level (``[-127, 127]`` for int8).
            ``None`` means ``symmetric``.
        power_of_two: Round the grid step up to a power of two.

    Raises:
        ValueError: For ``bits`` outside ``[2, 8]``, or (at build) an ``axis``
            outside the tensor's rank.

    Example:
        >>> quantizer = MinMaxQuantizer(bits=8, axis=-1)
        >>> y = quantizer(keras.random.normal((3, 3, 8, 16)))

    References:
        Jacob et al., "Quantization and Training of Neural Networks for
        Efficient Integer-Arithmetic-Only Inference", CVPR 2018.
    """

    min_bits = 2
    max_bits = 8

    def __init__(
        self,
        bits: int = 8,
        symmetric: bool = True,
        axis: int | None = None,
        narrow_range: bool | None = None,
        power_of_two: bool = False,
    ) -> None:
        super().__init__(bits)
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
            raise ValueError(f"axis must be None or an integer, got axis={axis!r}")
        self.symmetric = bool(symmetric)
        self.axis = axis
        self.narrow_range = self.symmetric if narrow_range is None else bool(narrow_range)
        self.power_of_two = bool(power_of_two)

    def build(self, layer, shape, name):
        q.validate_axis(self.axis, tuple(shape), f"{type(self).__name__} of {name!r}")
        return {}

    def value_range(self, x):
        """The ``(lo, hi)`` range this quantizer uses for ``x``."""
        axis = q.validate_axis(self.axis, tuple(x.shape), type(self).__name__)
        x = ops.stop_gradient(x)
        low, high = q.symmetric_range(x, axis) if self.symmetric else q.tensor_range(x, axis)
        if self.power_of_two:
            low, high = q.power_of_two_range(
                low, high, self.bits, self.narrow_range, self.symmetric
            )
        return low, high

    def call(self, x, state, training):
        low, high = self.value_range(x)
        axis = None if self.axis is None else self.axis % len(x.shape)
        return q.fake_quant(x, low, high, self.bits, self.narrow_range, axis)

    def get_config(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "symmetric": self.symmetric,
            "axis": self.axis,
            "narrow_range": self.narrow_range,
            "power_of_two": self.power_of_two,
        }


@keras.saving.register_keras_serializable(package="tfcompress")
class MovingAverageQuantizer(Quantizer):
    """Per-tensor uniform fake quantization over a moving-average range (for activations).

    In training, the range is an exponential moving average of each batch's
    ``[min, max]`` (the first batch sets it), kept in non-trainable variables
    of the owning layer; in inference and at export that stored range is used,
    so an int8 TFLite export needs no calibration data.

    Forward: ``fake_quant(x, lo, hi, bits)``. Pseudo-gradient: ``d/dx = 1``
    inside ``[lo, hi]``, 0 outside.

    Args:
        bits: Bits per value, 2 to 16 (TFLite int8 export needs 8).
        symmetric: Use ``[-max|x|, max|x|]`` instead of ``[min, max]``.
        momentum: Weight of the old range in the moving average.
        power_of_two: Round the grid step up to a power of two.

    Raises:
        ValueError: For ``bits`` outside ``[2, 16]`` or ``momentum`` outside
            ``[0, 1)``.

    Example:
        >>> layer = tfcompress.layers.QuantizeActivation("int8_activation")

    References:
        Jacob et al., "Quantization and Training of Neural Networks for
        Efficient Integer-Arithmetic-Only Inference", CVPR 2018.
    """

    stateful = True
    min_bits = 2
    max_bits = 16

    def __init__(
        self,
        bits: int = 8,
        symmetric: bool = False,
        momentum: float = 0.99,
        power_of_two: bool = False,
    ) -> None:
        super().__init__(bits)
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"momentum={momentum!r} must be in [0, 1)")
        self.symmetric = bool(symmetric)
        self.momentum = float(momentum)
        self.power_of_two = bool(power_of_two)

    def build(self, layer, shape, name):
        def variable(suffix, value):
            return layer.add_weight(
                name=f"{name}_{suffix}",
                shape=(),
                initializer=keras.initializers.Constant(value),
                trainable=False,
                dtype="float32",
                # Ranges stay float32 under mixed precision (no autocast to float16).
                autocast=False,
            )

        # Until the first training batch the range is TFMOT's default [-6, 6].
        return {
            "min": variable("min", -6.0),
            "max": variable("max", 6.0),
            "ready": variable("ready", 0.0),
        }

    def _batch_range(self, x):
        x = ops.stop_gradient(ops.cast(x, "float32"))
        return q.symmetric_range(x) if self.symmetric else q.tensor_range(x)

    def initialize(self, state, x):
        low, high = self._batch_range(ops.convert_to_tensor(x))
        state["min"].assign(low)
        state["max"].assign(high)
        state["ready"].assign(1.0)

    def call(self, x, state, training):
        low, high = ops.convert_to_tensor(state["min"]), ops.convert_to_tensor(state["max"])
        if training:
            batch_low, batch_high = self._batch_range(x)
            # Under tf.distribute each replica sees part of the batch: agree on
            # the global batch's range so every replica stores the same one.
            batch_low, batch_high = replica_min(batch_low), replica_max(batch_high)
            ready = state["ready"] > 0
            m = self.momentum
            low = ops.where(ready, m * low + (1 - m) * batch_low, batch_low)
            high = ops.where(ready, m * high + (1 - m) * batch_high, batch_high)
            state["min"].assign(low)
            state["max"].assign(high)
            state["ready"].assign(1.0)
        if self.power_of_two:
            low, high = q.power_of_two_range(low, high, self.bits, False, self.symmetric)
        return q.fake_quant(x, low, high, self.bits, narrow_range=False)

    def get_config(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "symmetric": self.symmetric,
            "momentum": self.momentum,
            "power_of_two": self.power_of_two,
        }
