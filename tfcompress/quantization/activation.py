"""``QuantizeActivation``: a stand-alone activation (optional) followed by a quantizer."""

from __future__ import annotations

from typing import Any

import keras

from tfcompress.quantization import registry as quantizers_module

__all__ = ["QuantizeActivation"]


@keras.saving.register_keras_serializable(package="tfcompress")
class QuantizeActivation(keras.layers.Layer):
    """Applies an optional activation, then fake-quantizes the result.

    Use it to quantize a model's input, or the output of a layer that has no
    quantizer of its own (a ``ReLU``, an ``Add``), so that TFLite can keep the
    whole graph in int8. ``quantize_model`` uses it in place of
    ``keras.layers.Activation``/``ReLU`` layers.

    Args:
        quantizer: The quantizer (preset name, config or
            :class:`~tfcompress.quantizers.Quantizer`). Default
            ``"int8_activation"`` (moving-average range, 8 bits).
        activation: Activation applied before quantizing (``None``: identity).
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).

    Returns:
        Called on a tensor, the fake-quantized tensor of the same shape.

    Raises:
        ValueError: For an unknown quantizer name or unsupported bits.

    Example:
        >>> inputs = keras.Input((8, 8, 1))
        >>> x = QuantizeActivation("int8_activation")(inputs)
    """

    is_quantization_aware = True

    def __init__(self, quantizer: Any = "int8_activation", activation: Any = None, **kwargs):
        super().__init__(**kwargs)
        self.quantizer = quantizers_module.get(quantizer, "quantizer")
        if self.quantizer is None:
            raise ValueError("quantizer=None: QuantizeActivation needs a quantizer")
        self.activation = keras.activations.get(activation)
        self.supports_masking = True
        self._quantizer_state = {}

    def build(self, input_shape) -> None:
        self._quantizer_state["activation"] = self.quantizer.build(
            self, tuple(input_shape), "activation"
        )

    def call(self, inputs, training=None):
        x = self.activation(inputs) if self.activation is not None else inputs
        return self.quantizer(x, self._quantizer_state["activation"], training=bool(training))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "quantizer": quantizers_module.serialize(self.quantizer),
                "activation": keras.activations.serialize(self.activation)
                if self.activation is not None
                else None,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="tfcompress")
class FoldedBatchNorm(keras.layers.Layer):
    """Identity left where ``quantize_model`` folded a BatchNormalization into a convolution.

    Unlike ``keras.layers.Identity`` it accepts the ``training``/``mask``
    arguments a BatchNormalization call was recorded with, so a Functional
    model can be rebuilt around it.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="tfcompress")
class QuantizeOutput(keras.layers.Wrapper):
    """Runs a layer that has no quantizer of its own, then fake-quantizes its output.

    ``quantize_model`` wraps ``Add``, ``Concatenate``-free merges and average
    pooling in it: TFLite needs a range on their outputs to run them in int8
    (``ADD``, ``MEAN``, ``AVERAGE_POOL_2D``); without one the graph falls back
    to float around them.

    Args:
        layer: The wrapped Keras layer (built or not).
        quantizer: The output quantizer (preset name, config or
            :class:`~tfcompress.quantizers.Quantizer`); default
            ``"int8_activation"``.
        **kwargs: Base layer arguments (``name``, ...).

    Returns:
        Called on the wrapped layer's inputs, its fake-quantized output.

    Raises:
        ValueError: For an unknown quantizer name, or ``quantizer=None``.

    Example:
        >>> add = QuantizeOutput(keras.layers.Add(), name="block_add")
        >>> y = add([keras.random.normal((2, 4)), keras.random.normal((2, 4))])
    """

    is_quantization_aware = True

    def __init__(self, layer: keras.layers.Layer, quantizer: Any = "int8_activation", **kwargs):
        super().__init__(layer, **kwargs)
        self.quantizer = quantizers_module.get(quantizer, "quantizer")
        if self.quantizer is None:
            raise ValueError("quantizer=None: QuantizeOutput needs a quantizer")
        self._quantizer_state = {}

    def build(self, input_shape) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
        output_shape = self.compute_output_shape(input_shape)
        self._quantizer_state["activation"] = self.quantizer.build(
            self, tuple(output_shape), "activation"
        )
        self.built = True

    def call(self, inputs, training=None, mask=None):
        # Keras hands merge layers of masked (text) models a ``mask``; the wrapped
        # layer's output mask comes from compute_mask, its call does not take one.
        del mask
        outputs = self.layer(inputs)
        return self.quantizer(outputs, self._quantizer_state["activation"], training=bool(training))

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    def compute_output_shape(self, input_shape):
        try:
            return self.layer.compute_output_shape(input_shape)
        except NotImplementedError:
            # A custom layer without compute_output_shape: trace it symbolically.
            spec = keras.tree.map_shape_structure(
                lambda shape: keras.KerasTensor(shape, dtype=self.compute_dtype), input_shape
            )
            return self.layer.compute_output_spec(spec).shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["quantizer"] = quantizers_module.serialize(self.quantizer)
        return config
