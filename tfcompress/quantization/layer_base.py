"""What every quantization-aware layer shares: its quantizers, their state, stats, saving.

A ``Quant*`` layer subclasses the Keras layer it replaces (same arguments and
defaults) and mixes in :class:`QuantizedLayerMixin`, which adds three optional
quantizers:

* ``input_quantizer``: fake-quantizes the layer's input (needed where the
  input does not come from another quantized layer, e.g. the model's input);
* ``kernel_quantizer``: fake-quantizes the kernel before it is used;
* ``activation_quantizer``: fake-quantizes the output, after the activation
  when TFLite fuses that activation into the int8 op (linear, ReLU, ReLU6),
  before it otherwise (softmax, sigmoid, tanh, ...: TFLite runs those on the
  dequantized output, so the int8 op needs the range of its own output).

Quantizer state (moving ranges, learned steps, TTQ scales) is created on the
layer through ``quantizer.build(layer, shape, role)`` and held by
:class:`QuantizerStateMixin`, which the binary layers (:mod:`tfcompress.binary.layers`)
share: one way to create, call, save and restore it for every quantizer.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from tfcompress.quantization import registry as quantizers_module

__all__ = ["QuantizedLayerMixin", "QuantizerStateMixin"]


class QuantizerStateMixin:
    """How a layer holds its quantizers' state: the same for every quantizer and layer.

    A layer with quantizers in attributes ``<role>_quantizer`` (``role`` is
    ``"input"``, ``"kernel"``, ``"activation"``) calls
    :meth:`_build_quantizer_state` for each role in its ``build``; the dict the
    quantizer's ``build(layer, shape, role)`` returns is kept per role and
    passed back by :meth:`_quantize`. The variables are the layer's own
    (``layer.add_weight``), so :meth:`save_own_variables` saves every variable
    of the layer, quantizer state included, and :meth:`load_own_variables`
    restores it: trainable variables first, then non-trainable, each in
    creation order (Keras' generic layer scheme).
    """

    @property
    def quantizer_state(self) -> dict[str, dict[str, keras.Variable]]:
        """The state variables of each quantizer, by role (empty before build)."""
        return {role: dict(state) for role, state in self._state_by_role().items()}

    def _state_by_role(self) -> dict:
        return getattr(self, "_quantizer_state", None) or {}

    def _build_quantizer_state(self, role: str, shape, values=None) -> None:
        """Builds ``<role>_quantizer`` on this layer; ``values`` initialise its state."""
        if getattr(self, "_quantizer_state", None) is None:
            # Tracked on purpose: TFLite's converter drops the signature when a
            # captured variable is not reachable through the layer's attributes.
            self._quantizer_state = {}
        quantizer = getattr(self, f"{role}_quantizer")
        if quantizer is None:
            return
        state = quantizer.build(self, tuple(shape), role)
        self._quantizer_state[role] = state
        if values is not None:
            quantizer.initialize(state, values)

    def _quantize(self, role: str, x, training=False):
        quantizer = getattr(self, f"{role}_quantizer")
        if quantizer is None:
            return x
        return quantizer(x, self._state_by_role().get(role, {}), training=bool(training))

    # Keras's Dense/Conv save only their own named variables; save every
    # variable (quantizer state included), trainable then non-trainable.
    def save_own_variables(self, store) -> None:
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store) -> None:
        keras.layers.Layer.load_own_variables(self, store)


class QuantizedLayerMixin(QuantizerStateMixin):
    """Adds input/kernel/activation quantizers to a Keras layer with a kernel."""

    is_quantization_aware = True

    def _setup_quantizers(self, kernel_quantizer, input_quantizer, activation_quantizer) -> None:
        self.kernel_quantizer = quantizers_module.get(kernel_quantizer, "kernel_quantizer")
        self.input_quantizer = quantizers_module.get(input_quantizer, "input_quantizer")
        self.activation_quantizer = quantizers_module.get(
            activation_quantizer, "activation_quantizer"
        )
        self._quantizer_state = {}

    # -- hooks for the concrete layers ---------------------------------------------

    def _float_kernel(self):
        return self.kernel

    def _kernel_view(self, kernel):
        """The kernel as its quantizer sees it (channel axis last)."""
        return kernel

    def _kernel_from_view(self, view):
        return view

    def _forward(self, inputs, kernel, activation):
        """The float layer's computation with ``kernel``: bias, then ``activation`` if any."""
        raise NotImplementedError

    # -- build / call --------------------------------------------------------------

    def _build_quantizers(self, input_shape) -> None:
        self._build_quantizer_state("input", input_shape)
        if self.kernel_quantizer is not None:
            kernel = self._kernel_view(self._float_kernel())
            self._build_quantizer_state("kernel", kernel.shape, values=kernel)
        if self.activation_quantizer is not None:
            self._build_quantizer_state("activation", self.compute_output_shape(input_shape))

    def quantized_kernel(self, training: bool = False):
        """The kernel after fake quantization (what the layer computes with)."""
        kernel = self._float_kernel()
        if self.kernel_quantizer is None:
            return kernel
        view = self._quantize("kernel", self._kernel_view(kernel), training)
        return self._kernel_from_view(view)

    def call(self, inputs, training=None):
        x = self._quantize("input", inputs, training)
        if fused_activation(self.activation):
            outputs = self._forward(x, self.quantized_kernel(training), self.activation)
            return self._quantize("activation", outputs, training)
        outputs = self._forward(x, self.quantized_kernel(training), None)
        return self.activation(self._quantize("activation", outputs, training))

    def initialize_quantizers(self) -> None:
        """Re-derives the kernel quantizer's state from the current kernel.

        Call it after assigning new kernel values (``quantize_model`` does).
        """
        state = self._state_by_role().get("kernel")
        if self.kernel_quantizer is not None and state is not None:
            kernel = self._kernel_view(self._float_kernel())
            self.kernel_quantizer.initialize(state, kernel)

    # -- reporting and saving ------------------------------------------------------

    def compression_stats(self) -> dict[str, Any]:
        """Stored size for ``tfcompress.summary``: quantized kernel, int32 bias, float scales."""
        kernel = self._float_kernel()
        kernel_size = math.prod(kernel.shape)
        bias_size = math.prod(self.bias.shape) if getattr(self, "bias", None) is not None else 0
        if self.kernel_quantizer is None:
            bits, scales = 32.0, 0
        else:
            bits = self.kernel_quantizer.bits_per_value
            axis = getattr(self.kernel_quantizer, "axis", None)
            view_shape = self._kernel_view(kernel).shape
            scales = 1 if axis is None else view_shape[axis]
        return {
            "bits_per_weight": bits,
            "params": int(kernel_size + bias_size),
            "bytes": kernel_size * bits / 8 + 4 * bias_size + 4 * scales,
        }

    def _quantizer_config(self) -> dict[str, Any]:
        return {
            f"{role}_quantizer": quantizers_module.serialize(getattr(self, f"{role}_quantizer"))
            for role in ("kernel", "input", "activation")
        }


_FUSED = ("linear", "relu", "relu6")


def fused_activation(activation) -> bool:
    """Whether TFLite fuses ``activation`` into an int8 conv/fully-connected op."""
    if activation is None:
        return True
    return getattr(activation, "__name__", None) in _FUSED


def reshape_bias(bias, rank: int, channels: int, data_format: str):
    shape = (
        (1,) * (rank + 1) + (channels,)
        if data_format == "channels_last"
        else ((1, channels) + (1,) * rank)
    )
    return ops.reshape(bias, shape)
