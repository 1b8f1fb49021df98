"""Quantization-aware convolutions: ``QuantConv1D``, ``QuantConv2D``, ``QuantDepthwiseConv2D``."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from tfcompress.quantization.layer_base import QuantizedLayerMixin, reshape_bias

__all__ = ["QuantConv1D", "QuantConv2D", "QuantDepthwiseConv2D"]

_QUANTIZER_DOC = """
    Args:
        filters, kernel_size, ...: Every argument of the Keras layer, same defaults.
        kernel_quantizer: Quantizer for the kernel (preset name, config,
            :class:`~tfcompress.quantizers.Quantizer`, or ``None`` for float).
            Default ``"int8_per_channel"``: symmetric, one range per output
            channel (axis -1), as TFLite's int8 convolutions expect.
        input_quantizer: Quantizer for the input, e.g. ``"int8_activation"``
            when the input does not come from another quantized layer.
        activation_quantizer: Quantizer for the output, after the activation
            when TFLite fuses it (linear, ReLU, ReLU6), before it otherwise
            (default ``"int8_activation"``: moving-average range).

    Raises:
        ValueError: For unknown quantizer names, or (at build) a quantizer that
            does not fit the kernel, e.g. an out-of-range ``axis``.
"""


class _QuantConv(QuantizedLayerMixin):
    def build(self, input_shape) -> None:
        super().build(input_shape)
        self._build_quantizers(input_shape)

    def _forward(self, inputs, kernel, activation):
        padding = self.padding
        if padding == "causal":
            inputs = ops.pad(inputs, self._compute_causal_padding())
            padding = "valid"
        outputs = ops.conv(
            inputs,
            kernel,
            strides=list(self.strides),
            padding=padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        if self.use_bias:
            outputs = ops.add(
                outputs, reshape_bias(self.bias, self.rank, self.filters, self.data_format)
            )
        if activation is not None:
            outputs = activation(outputs)
        return outputs

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(self._quantizer_config())
        return config


@keras.saving.register_keras_serializable(package="tfcompress")
class QuantConv2D(_QuantConv, keras.layers.Conv2D):
    __doc__ = (
        """A quantization-aware ``Conv2D`` (int8 ``CONV_2D`` in TFLite).

    Same arguments and defaults as ``keras.layers.Conv2D``, plus quantizers.
    Kernel and output are fake-quantized in training with a straight-through
    gradient; under TensorFlow the ops are the converter-recognised fake-quant
    ops, so int8 export needs no representative data.
"""
        + _QUANTIZER_DOC
        + """
    Example:
        >>> layer = QuantConv2D(16, 3, activation="relu", input_quantizer="int8_activation")
        >>> y = layer(keras.random.normal((2, 8, 8, 1)))
    """
    )

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=(1, 1),
        padding: str = "valid",
        data_format=None,
        dilation_rate=(1, 1),
        groups: int = 1,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        kernel_quantizer: Any = "int8_per_channel",
        input_quantizer: Any = None,
        activation_quantizer: Any = "int8_activation",
        **kwargs,
    ) -> None:
        super().__init__(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            data_format=data_format,
            dilation_rate=dilation_rate,
            groups=groups,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            **kwargs,
        )
        self._setup_quantizers(kernel_quantizer, input_quantizer, activation_quantizer)


@keras.saving.register_keras_serializable(package="tfcompress")
class QuantConv1D(_QuantConv, keras.layers.Conv1D):
    __doc__ = (
        """A quantization-aware ``Conv1D`` (causal padding included).

    Same arguments and defaults as ``keras.layers.Conv1D``, plus quantizers.
    TFLite runs it as an int8 ``CONV_2D`` over a height-1 image.
"""
        + _QUANTIZER_DOC
        + """
    Example:
        >>> layer = QuantConv1D(8, 3, padding="causal", input_quantizer="int8_activation")
        >>> y = layer(keras.random.normal((2, 16, 4)))
    """
    )

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=1,
        padding: str = "valid",
        data_format=None,
        dilation_rate=1,
        groups: int = 1,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        kernel_quantizer: Any = "int8_per_channel",
        input_quantizer: Any = None,
        activation_quantizer: Any = "int8_activation",
        **kwargs,
    ) -> None:
        super().__init__(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            data_format=data_format,
            dilation_rate=dilation_rate,
            groups=groups,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            **kwargs,
        )
        self._setup_quantizers(kernel_quantizer, input_quantizer, activation_quantizer)


@keras.saving.register_keras_serializable(package="tfcompress")
class QuantDepthwiseConv2D(QuantizedLayerMixin, keras.layers.DepthwiseConv2D):
    __doc__ = (
        """A quantization-aware ``DepthwiseConv2D`` (int8 ``DEPTHWISE_CONV_2D`` in TFLite).

    Same arguments and defaults as ``keras.layers.DepthwiseConv2D``, plus
    quantizers. The kernel ``(h, w, in, multiplier)`` is shown to its quantizer
    as ``(h, w, in * multiplier)``, so axis -1 is the output channel, as in the
    other layers and in TFLite.
"""
        + _QUANTIZER_DOC
        + """
    Example:
        >>> layer = QuantDepthwiseConv2D(3, padding="same", input_quantizer="int8_activation")
        >>> y = layer(keras.random.normal((2, 8, 8, 4)))
    """
    )

    def __init__(
        self,
        kernel_size,
        strides=(1, 1),
        padding: str = "valid",
        depth_multiplier: int = 1,
        data_format=None,
        dilation_rate=(1, 1),
        activation=None,
        use_bias: bool = True,
        depthwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        depthwise_constraint=None,
        bias_constraint=None,
        kernel_quantizer: Any = "int8_per_channel",
        input_quantizer: Any = None,
        activation_quantizer: Any = "int8_activation",
        **kwargs,
    ) -> None:
        super().__init__(
            kernel_size,
            strides=strides,
            padding=padding,
            depth_multiplier=depth_multiplier,
            data_format=data_format,
            dilation_rate=dilation_rate,
            activation=activation,
            use_bias=use_bias,
            depthwise_initializer=depthwise_initializer,
            bias_initializer=bias_initializer,
            depthwise_regularizer=depthwise_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            depthwise_constraint=depthwise_constraint,
            bias_constraint=bias_constraint,
            **kwargs,
        )
        self._setup_quantizers(kernel_quantizer, input_quantizer, activation_quantizer)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self._build_quantizers(input_shape)

    def _kernel_view(self, kernel):
        h, w, channels, multiplier = kernel.shape
        return ops.reshape(kernel, (h, w, channels * multiplier))

    def _kernel_from_view(self, view):
        return ops.reshape(view, self.kernel.shape)

    def _forward(self, inputs, kernel, activation):
        outputs = ops.depthwise_conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        if self.use_bias:
            channels = self.kernel.shape[2] * self.depth_multiplier
            outputs = ops.add(
                outputs, reshape_bias(self.bias, self.rank, channels, self.data_format)
            )
        if activation is not None:
            outputs = activation(outputs)
        return outputs

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(self._quantizer_config())
        return config
