"""``QuantDense``: ``keras.layers.Dense`` trained with fake-quantized kernel and activations."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from tfcompress.quantization.layer_base import QuantizedLayerMixin

__all__ = ["QuantDense"]


@keras.saving.register_keras_serializable(package="tfcompress")
class QuantDense(QuantizedLayerMixin, keras.layers.Dense):
    """A quantization-aware ``Dense`` layer.

    Takes every argument of ``keras.layers.Dense`` with the same defaults, plus
    three quantizers. In training the kernel and output go through fake
    quantization with a straight-through gradient; under the TensorFlow backend
    the fake-quant ops are the ones the TFLite converter maps to an int8
    ``FULLY_CONNECTED`` kernel, so ``tfcompress.export.tflite(model,
    path, quantization="int8")`` needs no representative data.

    Args:
        units: See ``keras.layers.Dense`` (all its arguments are accepted).
        kernel_quantizer: Quantizer for the kernel (a preset name, config or
            :class:`~tfcompress.quantizers.Quantizer`; ``None`` keeps it float).
            Default ``"int8"``: symmetric per-tensor (the TFLite converter
            rejects per-channel ranges on ``FULLY_CONNECTED`` weights).
        input_quantizer: Quantizer for the input, e.g. ``"int8_activation"``
            when the input does not come from another quantized layer.
        activation_quantizer: Quantizer for the output, after the activation
            when TFLite fuses it (linear, ReLU, ReLU6), before it otherwise
            (softmax, sigmoid, ...). Default ``"int8_activation"``
            (moving-average range).

    Returns:
        Called on a tensor, the (fake-quantized) output, as ``Dense`` would.

    Raises:
        ValueError: For unknown quantizer names, or a quantizer that does not
            fit the kernel (e.g. an out-of-range ``axis``) at build time.

    Example:
        >>> layer = QuantDense(10, activation="relu", kernel_quantizer="int4")
        >>> y = layer(keras.random.normal((2, 64)))
    """

    def __init__(
        self,
        units: int,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        lora_rank=None,
        lora_alpha=None,
        quantization_config=None,
        kernel_quantizer: Any = "int8",
        input_quantizer: Any = None,
        activation_quantizer: Any = "int8_activation",
        **kwargs,
    ) -> None:
        super().__init__(
            units,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            quantization_config=quantization_config,
            **kwargs,
        )
        self._setup_quantizers(kernel_quantizer, input_quantizer, activation_quantizer)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self._build_quantizers(input_shape)

    def _forward(self, inputs, kernel, activation):
        outputs = ops.matmul(inputs, kernel)
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)
        if activation is not None:
            outputs = activation(outputs)
        return outputs

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(self._quantizer_config())
        return config
