"""``quantize_model``: a trained Keras model -> a quantization-aware copy (weights kept).

Dense, Conv1D, Conv2D and DepthwiseConv2D layers become their ``Quant*``
twins; ``Activation``/``ReLU`` layers become :class:`QuantizeActivation`; a
BatchNormalization right after a convolution is folded into it (int8 TFLite
has no batch norm kernel); layers that only move values (pooling, flatten,
reshape, dropout) keep the int8 range of their input and are left alone;
``Add``/``Subtract``/``Multiply`` and average pooling get an output range
(:class:`QuantizeOutput`), so residual networks run in int8 end to end. A
layer whose only consumer is a quantized activation (ReLU6 after a folded
BatchNormalization, as in MobileNetV2) gets no range of its own, so TFLite
fuses the activation into the int8 op. Layers that would need their own range
but have no rule (Concatenate, custom layers, ...) are left as they are and
reported, so the exported graph falls back to float around them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from tfcompress.core.rewrite import (
    LayerSelection,
    Replacement,
    RewriteLog,
    iter_leaf_layers,
    layer_selector,
    rewrite_model,
)
from tfcompress.quantization import registry as quantizers_module
from tfcompress.quantization.activation import (
    FoldedBatchNorm,
    QuantizeActivation,
    QuantizeOutput,
)
from tfcompress.quantization.conv import QuantConv1D, QuantConv2D, QuantDepthwiseConv2D
from tfcompress.quantization.dense import QuantDense

__all__ = ["QuantizeConfig", "quantize_model"]

_QUANT_CLASSES: dict[type, type] = {
    keras.layers.Dense: QuantDense,
    keras.layers.Conv1D: QuantConv1D,
    keras.layers.Conv2D: QuantConv2D,
    keras.layers.DepthwiseConv2D: QuantDepthwiseConv2D,
}
_PER_CHANNEL = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
_ACTIVATION_LAYERS = (keras.layers.Activation, keras.layers.ReLU)
# Layers whose int8 output has the same range as their int8 input.
_PASS_THROUGH = (
    keras.layers.InputLayer,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.Identity,
    FoldedBatchNorm,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.UpSampling2D,
)
# Layers that need their own output range to run in int8.
_OUTPUT_RANGE = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
)
_OVERRIDE_KEYS = ("weight_bits", "kernel_quantizer", "activation_quantizer", "input_quantizer")


@dataclasses.dataclass
class QuantizeConfig:
    """What :func:`quantize_model` does, model-wide and per layer.

    Attributes:
        weight_bits: Bits of the default kernel quantizers: symmetric
            per-channel for convolutions, per-tensor for Dense (TFLite's int8
            ``FULLY_CONNECTED`` takes per-tensor weights only). 2 to 8.
        kernel_quantizer: If set, this quantizer for every kernel instead.
        activation_quantizer: Quantizer of each quantized layer's output.
        input_quantizer: Quantizer added to a quantized layer whose input does
            not come from another quantized layer (e.g. the model input).
        fold_batch_norm: Fold BatchNormalization into the preceding
            convolution/Dense (when that layer has no activation).
        quantize_activation_layers: Replace ``Activation``/``ReLU`` (plain or
            ReLU6) layers with :class:`~tfcompress.layers.QuantizeActivation`,
            and wrap ``Add``/``Subtract``/``Multiply``/average pooling in
            :class:`~tfcompress.layers.QuantizeOutput`.
        overrides: ``{layer name or class (name): settings}`` where settings is
            a dict with any of ``weight_bits``, ``kernel_quantizer``,
            ``activation_quantizer``, ``input_quantizer``, or ``None`` to keep
            that layer float (mixed precision).
    """

    weight_bits: int = 8
    kernel_quantizer: Any = None
    activation_quantizer: Any = "int8_activation"
    input_quantizer: Any = "int8_activation"
    fold_batch_norm: bool = True
    quantize_activation_layers: bool = True
    overrides: Mapping[Any, Mapping[str, Any] | None] | None = None

    @classmethod
    def coerce(cls, config: Any) -> QuantizeConfig:
        """Accepts ``None``, ``"int8"``/``"int4"``/... (weight bits), a dict or a config."""
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        if isinstance(config, str):
            if config.startswith("int") and config[3:].isdigit():
                return cls(weight_bits=int(config[3:]))
            raise ValueError(
                f"config={config!r} is not understood; expected 'int8', 'int4' (weight bits), "
                "a dict of QuantizeConfig fields, or a QuantizeConfig"
            )
        if isinstance(config, Mapping):
            unknown = set(config) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ValueError(
                    f"config has unknown keys {sorted(unknown)}; expected some of "
                    f"{[f.name for f in dataclasses.fields(cls)]}"
                )
            return cls(**config)
        raise TypeError(f"config must be None, a str, a dict or a QuantizeConfig, got {config!r}")


@dataclasses.dataclass
class _Plan:
    kernel_quantizer: Any
    activation_quantizer: Any
    input_quantizer: Any
    fold: keras.layers.Layer | None = None


def _settings(layer, config: QuantizeConfig, overrides: dict) -> dict[str, Any] | None:
    settings: dict[str, Any] = {
        "weight_bits": config.weight_bits,
        "kernel_quantizer": config.kernel_quantizer,
        "activation_quantizer": config.activation_quantizer,
        "input_quantizer": config.input_quantizer,
    }
    # Class overrides first, then name overrides (the more specific wins).
    for key, value in overrides.items():
        by_class = (isinstance(key, type) and isinstance(layer, key)) or key == type(layer).__name__
        if by_class:
            if value is None:
                return None
            settings.update(value)
    if layer.name in overrides:
        if overrides[layer.name] is None:
            return None
        settings.update(overrides[layer.name])
    return settings


def _kernel_quantizer(layer, settings, where):
    if settings["kernel_quantizer"] is not None:
        return quantizers_module.get(settings["kernel_quantizer"], f"{where} kernel_quantizer")
    bits = settings["weight_bits"]
    axis = -1 if isinstance(layer, _PER_CHANNEL) else None
    return quantizers_module.MinMaxQuantizer(bits, axis=axis)


def _producers(layer) -> list:
    found = []
    for node in getattr(layer, "_inbound_nodes", []):
        found.extend(parent.operation for parent in node.parent_nodes)
    return found


def _validate_overrides(model, overrides) -> dict:
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise TypeError(f"config.overrides must be a dict, got {type(overrides).__name__}")
    for key, value in overrides.items():
        layer_selector([key], model, argument=f"config.overrides key {key!r}")
        if value is not None and (
            not isinstance(value, Mapping) or set(value) - set(_OVERRIDE_KEYS)
        ):
            raise ValueError(
                f"config.overrides[{key!r}]={value!r}: expected None or a dict with keys "
                f"among {list(_OVERRIDE_KEYS)}"
            )
    return dict(overrides)


def _check_copyable(qualified: str, layer) -> None:
    try:
        type(layer).from_config(layer.get_config())
    except Exception as error:
        raise ValueError(
            f"layer {qualified!r} ({type(layer).__name__}) cannot be copied, so the model "
            f"cannot be quantized: rebuilding it from get_config() failed with "
            f"{type(error).__name__}: {error}. Give {type(layer).__name__} a complete "
            "get_config(), or pass layers=[...] to quantize only some layers."
        ) from error


def _fold_batch_norm(new_layer, old_layer, bn) -> None:
    """Sets ``new_layer``'s kernel and bias to ``old_layer`` followed by ``bn`` (inference)."""
    kernel = np.asarray(keras.ops.convert_to_numpy(old_layer.kernel), dtype=np.float64)
    channels = bn.moving_mean.shape[0]
    mean = np.asarray(bn.moving_mean.numpy(), np.float64)
    var = np.asarray(bn.moving_variance.numpy(), np.float64)
    gamma = np.asarray(bn.gamma.numpy(), np.float64) if bn.gamma is not None else np.ones(channels)
    beta = np.asarray(bn.beta.numpy(), np.float64) if bn.beta is not None else np.zeros(channels)
    factor = gamma / np.sqrt(var + bn.epsilon)
    old_bias = (
        np.asarray(old_layer.bias.numpy(), np.float64)
        if getattr(old_layer, "bias", None) is not None
        else np.zeros(channels)
    )
    if isinstance(old_layer, keras.layers.DepthwiseConv2D):
        kernel = kernel * factor.reshape(kernel.shape[2], kernel.shape[3])
    else:
        kernel = kernel * factor
    _kernel_variable(new_layer).assign(kernel.astype("float32"))
    new_layer.bias.assign((beta + (old_bias - mean) * factor).astype("float32"))


def _plain_activation(layer) -> bool:
    """An Activation layer, or a ReLU/ReLU6 without slope or threshold."""
    if type(layer) is keras.layers.Activation:
        return True
    if type(layer) is keras.layers.ReLU:
        relu = layer.get_config()
        return (
            relu.get("max_value") in (None, 6, 6.0)
            and not relu.get("negative_slope")
            and not relu.get("threshold")
        )
    return False


def _activation_name(layer) -> Any:
    if isinstance(layer, keras.layers.ReLU):
        return "relu" if layer.get_config().get("max_value") is None else "relu6"
    return layer.get_config()["activation"]


def _consumers(layer) -> list:
    return [node.operation for node in getattr(layer, "_outbound_nodes", [])]


def _kernel_variable(layer):
    return layer._kernel if hasattr(layer, "_kernel") else layer.kernel


def _copy_weights(new_layer, old_layer) -> None:
    _kernel_variable(new_layer).assign(keras.ops.convert_to_numpy(old_layer.kernel))
    if getattr(old_layer, "bias", None) is not None:
        new_layer.bias.assign(old_layer.bias.numpy())


def _foldable_batch_norm(bn, plans) -> keras.layers.Layer | None:
    if type(bn) is not keras.layers.BatchNormalization:
        return None
    producers = _producers(bn)
    if len(producers) != 1 or id(producers[0]) not in plans:
        return None
    conv = producers[0]
    if not isinstance(conv, tuple(_QUANT_CLASSES)) or len(conv._outbound_nodes) != 1:
        return None
    if conv.activation not in (None, keras.activations.linear):
        return None
    rank = len(conv.output.shape) if hasattr(conv, "output") else None
    axes = bn.axis if isinstance(bn.axis, (list, tuple)) else [bn.axis]
    last = rank - 1 if rank else -1
    channels_last = getattr(conv, "data_format", "channels_last") == "channels_last"
    if not channels_last or [a % rank for a in axes] != [last]:
        return None
    return conv


def quantize_model(
    model: keras.Model,
    config: QuantizeConfig | Mapping[str, Any] | str | None = None,
    layers: LayerSelection = None,
    *,
    return_log: bool = False,
) -> keras.Model | tuple[keras.Model, RewriteLog]:
    """Returns a quantization-aware copy of a trained model, ready to fine-tune.

    Supported layers (``Dense``, ``Conv1D``, ``Conv2D``, ``DepthwiseConv2D``)
    are replaced by ``Quant*`` layers with the same configuration and weights;
    ``Activation``/``ReLU`` layers by ``QuantizeActivation``; a
    ``BatchNormalization`` that follows a linear convolution is folded into it.
    The first quantized layer(s) also quantize their input. Fine-tune the copy
    for a few epochs, then ``tfcompress.export.tflite(qat_model, path,
    quantization="int8")`` writes a full-integer file without calibration data.
    The user's model is never modified.

    Args:
        model: A built Sequential or Functional model (nested models are
            entered).
        config: ``None`` (8-bit), ``"int4"``-style weight bits, a dict of
            :class:`QuantizeConfig` fields, or a ``QuantizeConfig``. Per-layer
            overrides (by layer name or class) give mixed precision.
        layers: Which layers to quantize (names, classes, class names or a
            predicate; default all supported layers). Naming a layer that
            cannot be quantized is an error.
        return_log: Also return the :class:`RewriteLog` (replaced layers, and
            layers left float with the reason).

    Returns:
        The new model, or ``(model, log)`` with ``return_log``.

    Raises:
        ValueError: For bad config values (unknown quantizer names, bits out of
            range), an override or selection that matches no layer, a selected
            layer that cannot be quantized, or a layer that cannot be copied.
        TypeError: For subclassed models.

    Example:
        >>> qat = tfcompress.quantize_model(model, {"overrides": {"logits": {"weight_bits": 8}},
        ...                                         "weight_bits": 4})
        >>> qat.compile(...); qat.fit(x, y, epochs=3)
        >>> tfcompress.export.tflite(qat, "model.tflite", quantization="int8")
    """
    config = QuantizeConfig.coerce(config)
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    overrides = _validate_overrides(model, config.overrides)
    explicit = layers is not None
    selected = layer_selector(layers, model, argument="layers")

    plans: dict[int, _Plan] = {}
    log_skipped: list[tuple[str, str, str]] = []
    activation_layers: dict[int, Any] = {}
    leaves = list(iter_leaf_layers(model))
    for qualified, layer in leaves:
        is_selected = selected(layer)
        supported = type(layer) in _QUANT_CLASSES
        is_activation = config.quantize_activation_layers and _plain_activation(layer)
        needs_range = config.quantize_activation_layers and type(layer) in _OUTPUT_RANGE
        if explicit and is_selected and not (supported or is_activation or needs_range):
            raise ValueError(
                f"layers={layers!r} selects layer {qualified!r} of type {type(layer).__name__}, "
                f"which quantize_model cannot quantize; supported types: "
                f"{', '.join(c.__name__ for c in (*_QUANT_CLASSES, *_OUTPUT_RANGE))}, "
                "Activation, ReLU"
            )
        settings = _settings(layer, config, overrides)
        where = f"layer {qualified!r}"
        if supported and is_selected:
            if settings is None:
                log_skipped.append((qualified, type(layer).__name__, "kept float by override"))
                continue
            plans[id(layer)] = _Plan(
                kernel_quantizer=_kernel_quantizer(layer, settings, where),
                activation_quantizer=quantizers_module.get(
                    settings["activation_quantizer"], f"{where} activation_quantizer"
                ),
                input_quantizer=quantizers_module.get(
                    settings["input_quantizer"], f"{where} input_quantizer"
                ),
            )
        elif (is_activation or needs_range) and is_selected and settings is not None:
            quantizer = quantizers_module.get(
                settings["activation_quantizer"], f"{where} activation_quantizer"
            )
            if quantizer is not None:
                activation_layers[id(layer)] = quantizer
        elif not isinstance(layer, _PASS_THROUGH) and not getattr(
            layer, "is_quantization_aware", False
        ):
            reason = "not selected" if not is_selected else "no int8 rule for this layer type"
            if not (supported or isinstance(layer, keras.layers.BatchNormalization)):
                _check_copyable(qualified, layer)
            log_skipped.append((qualified, type(layer).__name__, reason))

    folds: dict[int, keras.layers.Layer] = {}
    if config.fold_batch_norm:
        for _, layer in leaves:
            conv = _foldable_batch_norm(layer, plans)
            if conv is not None:
                folds[id(layer)] = conv
                plans[id(conv)].fold = layer
        folded_names = {layer.name for _, layer in leaves if id(layer) in folds}
        log_skipped = [
            s
            for s in log_skipped
            if not (s[1] == "BatchNormalization" and s[0].split("/")[-1] in folded_names)
        ]

    # A layer feeding only a quantized activation (through a folded BN) needs
    # no range of its own: TFLite fuses ReLU/ReLU6 into the int8 op.
    for _, layer in leaves:
        if id(layer) not in plans:
            continue
        chain = _consumers(layer)
        if len(chain) == 1 and id(chain[0]) in folds:
            chain = _consumers(chain[0])
        if (
            len(chain) == 1
            and id(chain[0]) in activation_layers
            and _plain_activation(chain[0])
            and _activation_name(chain[0]) in ("relu", "relu6")
            and plans[id(layer)].activation_quantizer is not None
        ):
            plans[id(layer)].activation_quantizer = None

    # Which outputs already carry an int8 range (so the next layer's input needs none).
    memo: dict[int, bool] = {}

    def quantized_output(layer) -> bool:
        key = id(layer)
        if key not in memo:
            memo[key] = False  # cycles cannot happen; this guards re-entry
            if key in plans:
                memo[key] = plans[key].activation_quantizer is not None
            elif key in activation_layers:
                memo[key] = True
            elif key in folds:
                memo[key] = quantized_output(folds[key])
            elif getattr(layer, "is_quantization_aware", False) and getattr(
                layer, "activation_quantizer", getattr(layer, "quantizer", None)
            ):
                memo[key] = True
            elif isinstance(layer, _PASS_THROUGH) and not isinstance(
                layer, keras.layers.InputLayer
            ):
                producers = _producers(layer)
                memo[key] = bool(producers) and all(quantized_output(p) for p in producers)
        return memo[key]

    def replace(layer):
        key = id(layer)
        if key in plans:
            plan = plans[key]
            producers = _producers(layer)
            needs_input = not producers or not all(quantized_output(p) for p in producers)
            layer_config = layer.get_config()
            if plan.fold is not None:
                layer_config["use_bias"] = True
            layer_config.update(
                kernel_quantizer=plan.kernel_quantizer,
                activation_quantizer=plan.activation_quantizer,
                input_quantizer=plan.input_quantizer if needs_input else None,
            )
            new = _QUANT_CLASSES[type(layer)].from_config(layer_config)
            bn = plan.fold

            def initialize(new_layer, old_layer, bn=bn):
                if bn is None:
                    _copy_weights(new_layer, old_layer)
                else:
                    _fold_batch_norm(new_layer, old_layer, bn)
                new_layer.initialize_quantizers()

            return Replacement(new, initialize)
        if key in folds:
            return Replacement(FoldedBatchNorm(name=layer.name))
        if key in activation_layers and not _plain_activation(layer):
            inner = type(layer).from_config({**layer.get_config(), "name": f"{layer.name}_float"})
            return Replacement(QuantizeOutput(inner, activation_layers[key], name=layer.name))
        if key in activation_layers:
            return Replacement(
                QuantizeActivation(
                    activation_layers[key], activation=_activation_name(layer), name=layer.name
                )
            )
        return None

    new_model, log = rewrite_model(model, replace)
    log.skipped.extend(log_skipped)
    return (new_model, log) if return_log else new_model
