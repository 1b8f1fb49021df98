"""``QuantSeparableConv2D``: depthwise then pointwise, both kernels and the tensor between quantized.

TFLite runs a separable convolution as two ops, ``DEPTHWISE_CONV_2D`` then a
1x1 ``CONV_2D``; for both to be int8 the tensor between them needs a range of
its own, which ``intermediate_quantizer`` records in training.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from tfcompress.quantization import registry as quantizers_module
from tfcompress.quantization.layer_base import (
    QuantizedLayerMixin,
    fused_activation,
    reshape_bias,
)

__all__ = ["QuantSeparableConv2D"]


@keras.saving.register_keras_serializable(package="tfcompress")
class QuantSeparableConv2D(QuantizedLayerMixin, keras.layers.SeparableConv2D):
    """A quantization-aware ``SeparableConv2D`` (int8 ``DEPTHWISE_CONV_2D`` + ``CONV_2D``).

    Same arguments and defaults as ``keras.layers.SeparableConv2D``, plus
    quantizers. The layer computes
    ``y = act(conv1x1(q_mid(depthwise(q_in(x), q_w(D))), q_w(P)) + b)``:
    ``kernel_quantizer`` is applied to the depthwise kernel ``D`` (seen as
    ``(h, w, in * multiplier)``) and to the pointwise kernel ``P`` (seen as
    ``(1, 1, in * multiplier, filters)``), each with its own state, so axis -1
    is the output channel of each op as in TFLite; ``intermediate_quantizer``
    fake-quantizes the depthwise output. Gradients pass straight through.

    Args:
        filters, kernel_size, ...: Every argument of the Keras layer, same defaults.
        kernel_quantizer: Quantizer for both kernels (preset name, config,
            :class:`~tfcompress.quantizers.Quantizer`, or ``None`` for float).
            Default ``"int8_per_channel"``.
        input_quantizer: Quantizer for the input, e.g. ``"int8_activation"``
            when the input does not come from another quantized layer.
        activation_quantizer: Quantizer for the output, after a fused
            activation (linear, ReLU, ReLU6), before any other one (default
            ``"int8_activation"``).
        intermediate_quantizer: Quantizer for the depthwise output, the
            pointwise op's input (default ``"int8_activation"``; ``None``
            leaves it float, and TFLite then runs the pair in float).

    Returns:
        Called on a tensor, the (fake-quantized) output, as ``SeparableConv2D`` would.

    Raises:
        ValueError: For unknown quantizer names, or (at build) a quantizer that
            does not fit a kernel.

    Example:
        >>> layer = QuantSeparableConv2D(16, 3, padding="same",
        ...                              input_quantizer="int8_activation")
        >>> y = layer(keras.random.normal((2, 8, 8, 4)))
    """

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=(1, 1),
        padding: str = "valid",
        data_format=None,
        dilation_rate=(1, 1),
        depth_multiplier: int = 1,
        activation=None,
        use_bias: bool = True,
        depthwise_initializer="glorot_uniform",
        pointwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        pointwise_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        depthwise_constraint=None,
        pointwise_constraint=None,
        bias_constraint=None,
        kernel_quantizer: Any = "int8_per_channel",
        input_quantizer: Any = None,
        activation_quantizer: Any = "int8_activation",
        intermediate_quantizer: Any = "int8_activation",
        **kwargs,
    ) -> None:
        super().__init__(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            data_format=data_format,
            dilation_rate=dilation_rate,
            depth_multiplier=depth_multiplier,
            activation=activation,
            use_bias=use_bias,
            depthwise_initializer=depthwise_initializer,
            pointwise_initializer=pointwise_initializer,
            bias_initializer=bias_initializer,
            depthwise_regularizer=depthwise_regularizer,
            pointwise_regularizer=pointwise_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            depthwise_constraint=depthwise_constraint,
            pointwise_constraint=pointwise_constraint,
            bias_constraint=bias_constraint,
            **kwargs,
        )
        self._setup_quantizers(kernel_quantizer, input_quantizer, activation_quantizer)
        self.intermediate_quantizer = quantizers_module.get(
            intermediate_quantizer, "intermediate_quantizer"
        )

    # Views: the depthwise kernel (h, w, in, m) as (h, w, in * m); the pointwise
    # kernel (1, 1, in * m, filters) as it is. Channel axis last in both.
    def _float_kernel(self):
        return self.depthwise_kernel

    def _kernel_view(self, kernel):
        h, w, channels, multiplier = kernel.shape
        return ops.reshape(kernel, (h, w, channels * multiplier))

    def _kernel_from_view(self, view):
        return ops.reshape(view, self.depthwise_kernel.shape)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self._build_quantizers(input_shape)
        state = self._quantizer_state
        if self.kernel_quantizer is not None:
            state["pointwise"] = self.kernel_quantizer.build(
                self, tuple(self.pointwise_kernel.shape), "pointwise_kernel"
            )
            self.kernel_quantizer.initialize(state["pointwise"], self.pointwise_kernel)
        if self.intermediate_quantizer is not None:
            # The depthwise output has the layer's output size (the 1x1 conv keeps it).
            depthwise_shape = list(self.compute_output_shape(input_shape))
            channel_axis = -1 if self.data_format == "channels_last" else 1
            depthwise_shape[channel_axis] = self.depthwise_kernel.shape[2] * self.depth_multiplier
            state["intermediate"] = self.intermediate_quantizer.build(
                self, tuple(depthwise_shape), "intermediate"
            )

    def initialize_quantizers(self) -> None:
        """Re-derives both kernel quantizers' state from the current kernels."""
        super().initialize_quantizers()
        if self.kernel_quantizer is not None and "pointwise" in self._quantizer_state:
            self.kernel_quantizer.initialize(
                self._quantizer_state["pointwise"], self.pointwise_kernel
            )

    def quantized_pointwise_kernel(self, training: bool = False):
        """The pointwise kernel after fake quantization."""
        if self.kernel_quantizer is None:
            return self.pointwise_kernel
        return self.kernel_quantizer(
            self.pointwise_kernel, self._quantizer_state["pointwise"], training=bool(training)
        )

    def call(self, inputs, training=None):
        # Kept here, not in _forward: the pointwise kernel and the intermediate
        # range need ``training`` too.
        x = self._quantize("input", inputs, training)
        mid = ops.depthwise_conv(
            x,
            self.quantized_kernel(training),
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        if self.intermediate_quantizer is not None:
            mid = self.intermediate_quantizer(
                mid, self._quantizer_state["intermediate"], training=bool(training)
            )
        outputs = ops.conv(
            mid,
            self.quantized_pointwise_kernel(training),
            strides=1,
            padding="valid",
            data_format=self.data_format,
        )
        if self.use_bias:
            outputs = ops.add(
                outputs, reshape_bias(self.bias, self.rank, self.filters, self.data_format)
            )
        if fused_activation(self.activation):
            if self.activation is not None:
                outputs = self.activation(outputs)
            return self._quantize("activation", outputs, training)
        return self.activation(self._quantize("activation", outputs, training))

    def compression_stats(self) -> dict[str, Any]:
        """Stored size: both quantized kernels, int32 bias, float scales."""
        sizes = [math.prod(self.depthwise_kernel.shape), math.prod(self.pointwise_kernel.shape)]
        bias_size = math.prod(self.bias.shape) if self.bias is not None else 0
        if self.kernel_quantizer is None:
            bits, scales = 32.0, 0
        else:
            bits = self.kernel_quantizer.bits_per_value
            per_channel = getattr(self.kernel_quantizer, "axis", None) is not None
            channels = self.depthwise_kernel.shape[2] * self.depth_multiplier
            scales = channels + self.filters if per_channel else 2
        return {
            "bits_per_weight": bits,
            "params": int(sum(sizes) + bias_size),
            "bytes": sum(sizes) * bits / 8 + 4 * bias_size + 4 * scales,
        }

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(self._quantizer_config())
        config["intermediate_quantizer"] = quantizers_module.serialize(self.intermediate_quantizer)
        return config
