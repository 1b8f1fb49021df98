"""``QuantConv2DTranspose``: a quantization-aware ``Conv2DTranspose`` (int8 ``TRANSPOSE_CONV``)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from tfcompress.quantization.layer_base import QuantizedLayerMixin, reshape_bias

__all__ = ["QuantConv2DTranspose"]


@keras.saving.register_keras_serializable(package="tfcompress")
class QuantConv2DTranspose(QuantizedLayerMixin, keras.layers.Conv2DTranspose):
    """A quantization-aware ``Conv2DTranspose`` (int8 ``TRANSPOSE_CONV`` in TFLite).

    Same arguments and defaults as ``keras.layers.Conv2DTranspose``, plus
    quantizers. Kernel and output are fake-quantized in training with a
    straight-through gradient: ``y = act(conv_transpose(q(x), q_w(W)) + b)``.
    The kernel range is per tensor: the Keras kernel is ``(h, w, filters, in)``
    and the converter transposes it for ``TRANSPOSE_CONV``, which it refuses
    to do for a per-channel range ("mismatched quantized axes").

    Args:
        filters, kernel_size, ...: Every argument of the Keras layer, same defaults.
        kernel_quantizer: Quantizer for the kernel (preset name, config,
            :class:`~tfcompress.quantizers.Quantizer`, or ``None`` for float).
            Default ``"int8"``: symmetric, one range for the whole kernel.
        input_quantizer: Quantizer for the input, e.g. ``"int8_activation"``
            when the input does not come from another quantized layer.
        activation_quantizer: Quantizer for the output, after a fused
            activation (linear, ReLU, ReLU6), before any other one (default
            ``"int8_activation"``: moving-average range).

    Returns:
        Called on a tensor, the (fake-quantized) output, as ``Conv2DTranspose`` would.

    Raises:
        ValueError: For unknown quantizer names, or (at build) a quantizer that
            does not fit the kernel.

    Example:
        >>> layer = QuantConv2DTranspose(8, 3, strides=2, padding="same",
        ...                              input_quantizer="int8_activation")
        >>> y = layer(keras.random.normal((2, 4, 4, 3)))  # (2, 8, 8, 8)
    """

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=(1, 1),
        padding: str = "valid",
        output_padding=None,
        data_format=None,
        dilation_rate=(1, 1),
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        kernel_quantizer: Any = "int8",
        input_quantizer: Any = None,
        activation_quantizer: Any = "int8_activation",
        **kwargs,
    ) -> None:
        super().__init__(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            output_padding=output_padding,
            data_format=data_format,
            dilation_rate=dilation_rate,
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

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self._build_quantizers(input_shape)

    def _forward(self, inputs, kernel, activation):
        outputs = ops.conv_transpose(
            inputs,
            kernel,
            strides=list(self.strides),
            padding=self.padding,
            output_padding=self.output_padding,
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
