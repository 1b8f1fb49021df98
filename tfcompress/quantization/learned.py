"""Quantizers whose range is learned by gradient descent: LSQ step sizes and PACT clipping."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from tfcompress.core.replicas import replica_max, replica_mean
from tfcompress.quantization import ops as q
from tfcompress.quantization.base import Quantizer, scalar_state

__all__ = ["LSQQuantizer", "PACTQuantizer"]


@keras.saving.register_keras_serializable(package="tfcompress")
class LSQQuantizer(Quantizer):
    """Learned Step Size Quantization: the grid step is a trainable variable.

    The step ``s`` (one per tensor, or per channel along ``axis``) lives on the
    owning layer. It starts at ``2 * mean|x| / sqrt(qmax)`` from the first
    values seen in training (or :meth:`initialize`) and is then trained with a
    gradient scaled by ``1 / sqrt(N * qmax)``. At inference (and so at export)
    the learned range ``[s * qmin, s * qmax]`` goes into the converter's
    fake-quant op.

    Forward: ``s * clip(floor(x / s + 0.5), qmin, qmax)``. Pseudo-gradients:
    ``d/dx = 1`` inside the grid, 0 outside; ``d/ds = round(x/s) - x/s`` inside,
    ``qmin`` / ``qmax`` where clipped, times the gradient scale.

    Args:
        bits: Bits per value, 2 to 16 (TFLite int8 export needs <= 8).
        signed: Signed narrow grid ``[-(2^(b-1)-1), 2^(b-1)-1]`` (weights, zero
            point 0) or unsigned ``[0, 2^b - 1]`` (non-negative activations).
        axis: Channel axis for per-channel steps, or ``None``.
        power_of_two: Constrain the step to a power of two (straight through).

    Raises:
        ValueError: For ``bits`` outside ``[2, 16]``, or (at build) an ``axis``
            outside the tensor's rank or along an unknown dimension.

    Example:
        >>> layer = tfcompress.layers.QuantDense(10, kernel_quantizer="int4_lsq")

    References:
        Esser et al., "Learned Step Size Quantization", ICLR 2020.
    """

    stateful = True
    min_bits = 2
    max_bits = 16

    def __init__(
        self,
        bits: int = 8,
        signed: bool = True,
        axis: int | None = None,
        power_of_two: bool = False,
    ) -> None:
        super().__init__(bits)
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
            raise ValueError(f"axis must be None or an integer, got axis={axis!r}")
        self.signed = bool(signed)
        self.axis = axis
        self.power_of_two = bool(power_of_two)
        self.qmin, self.qmax = q.quantization_grid(bits, signed, narrow_range=signed)

    def build(self, layer, shape, name):
        shape = tuple(shape)
        axis = q.validate_axis(self.axis, shape, f"{type(self).__name__} of {name!r}")
        if axis is not None and shape[axis] is None:
            raise ValueError(f"axis={self.axis} of {name!r} has unknown size in shape {shape}")
        step = layer.add_weight(
            name=f"{name}_step",
            shape=() if axis is None else (shape[axis],),
            initializer="ones",
            trainable=True,
            dtype="float32",
            # Ranges stay float32 under mixed precision (no autocast to float16).
            autocast=False,
        )
        return {"step": step, "ready": scalar_state(layer, f"{name}_ready")}

    def _axis(self, x):
        return None if self.axis is None else self.axis % len(x.shape)

    def _broadcast(self, step, x):
        axis = self._axis(x)
        if axis is None:
            return step
        return ops.reshape(step, q.broadcast_shape(len(x.shape), axis, x.shape[axis]))

    def initialize(self, state, x):
        x = ops.cast(ops.convert_to_tensor(x), "float32")
        state["step"].assign(q.lsq_initial_step(x, self.qmax, self._axis(x)))
        state["ready"].assign(1.0)

    def _step(self, x, state, training):
        step = ops.convert_to_tensor(state["step"])
        if training:
            initial = q.lsq_initial_step(
                ops.stop_gradient(ops.cast(x, "float32")), self.qmax, self._axis(x)
            )
            # Same initial step on every tf.distribute replica (mean of means).
            initial = replica_mean(initial)
            ready = state["ready"] > 0
            step = ops.where(ready, step, initial)
            state["step"].assign(ops.stop_gradient(step))
            state["ready"].assign(1.0)
        step = ops.maximum(ops.abs(step), 1e-8)
        if self.power_of_two:
            step = q.power_of_two(step, ste=True)
        return step

    def value_range(self, x, state):
        """The learned ``(lo, hi)`` range (per channel when ``axis`` is set)."""
        step = self._step(x, state, training=False)
        return step * self.qmin, step * self.qmax

    def call(self, x, state, training):
        step = self._step(x, state, training)
        if training:
            axis = self._axis(x)
            # N counts the values sharing a step; for activations the (unknown)
            # batch dimension is left out, as in the paper.
            known = [d for i, d in enumerate(x.shape) if d is not None and i != axis]
            grad_scale = q.lsq_grad_scale(math.prod(known) if known else 1, self.qmax)
            # In float32 whatever the input dtype (mixed precision): the step
            # and its gradient stay float32 like the variable.
            quantized = q.lsq_fake_quant(
                ops.cast(x, "float32"), self._broadcast(step, x), self.qmin, self.qmax, grad_scale
            )
            return ops.cast(quantized, x.dtype)
        # Inference/export: the converter-recognised op over the learned range.
        return q.fake_quant(
            x, step * self.qmin, step * self.qmax, self.bits, self.signed, self._axis(x)
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "signed": self.signed,
            "axis": self.axis,
            "power_of_two": self.power_of_two,
        }


@keras.saving.register_keras_serializable(package="tfcompress")
class PACTQuantizer(Quantizer):
    """PACT: activations clipped to a learned ``[0, alpha]`` and quantized unsigned.

    ``alpha`` is a trainable scalar of the owning layer. With
    ``initial_alpha=None`` it starts at the maximum of the first training batch.
    The quantizer includes a ReLU (values below 0 become 0), so use it on
    non-negative activations. At inference and export the range ``[0, alpha]``
    goes into the converter's fake-quant op.

    Forward: ``round(clip(x, 0, alpha) / s) * s`` with ``s = alpha / (2^b - 1)``.
    Pseudo-gradients: ``d/dx = 1`` for ``0 <= x < alpha``, else 0;
    ``d/dalpha = 1`` where ``x >= alpha``, else 0.

    Args:
        bits: Bits per value, 2 to 16.
        initial_alpha: Starting clip value, or ``None`` for the first batch's max.

    Raises:
        ValueError: For ``bits`` outside ``[2, 16]`` or a non-positive
            ``initial_alpha``.

    Example:
        >>> layer = tfcompress.layers.QuantizeActivation("int4_pact", activation="relu")

    References:
        Choi et al., "PACT: Parameterized Clipping Activation for Quantized
        Neural Networks", 2018.
    """

    stateful = True
    min_bits = 2
    max_bits = 16

    def __init__(self, bits: int = 8, initial_alpha: float | None = None) -> None:
        super().__init__(bits)
        if initial_alpha is not None and not float(initial_alpha) > 0:
            raise ValueError(f"initial_alpha={initial_alpha!r} must be > 0 or None")
        self.initial_alpha = None if initial_alpha is None else float(initial_alpha)

    def build(self, layer, shape, name):
        alpha = layer.add_weight(
            name=f"{name}_alpha",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_alpha or 6.0),
            trainable=True,
            dtype="float32",
            # Ranges stay float32 under mixed precision (no autocast to float16).
            autocast=False,
        )
        ready = scalar_state(layer, f"{name}_ready")
        if self.initial_alpha is not None:
            ready.assign(1.0)
        return {"alpha": alpha, "ready": ready}

    def initialize(self, state, x):
        x = ops.cast(ops.convert_to_tensor(x), "float32")
        state["alpha"].assign(ops.maximum(ops.max(x), 1e-3))
        state["ready"].assign(1.0)

    def value_range(self, x, state):
        return 0.0, ops.maximum(state["alpha"], 1e-6)

    def call(self, x, state, training):
        alpha = ops.convert_to_tensor(state["alpha"])
        if training:
            first = ops.maximum(ops.max(ops.stop_gradient(ops.cast(x, "float32"))), 1e-3)
            first = replica_max(first)  # the global batch's maximum under tf.distribute
            alpha = ops.where(state["ready"] > 0, alpha, first)
            state["alpha"].assign(ops.stop_gradient(alpha))
            state["ready"].assign(1.0)
            return q.pact_fake_quant(x, ops.cast(alpha, x.dtype), self.bits)
        return q.fake_quant(x, 0.0, ops.maximum(alpha, 1e-6), self.bits, narrow_range=False)

    def get_config(self) -> dict[str, Any]:
        return {"bits": self.bits, "initial_alpha": self.initial_alpha}
