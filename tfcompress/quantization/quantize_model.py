"""``quantize_model``: a trained Keras model -> a quantization-aware copy (weights kept).

Three steps, driven by a :class:`~tfcompress.quantization.scheme.QuantizeScheme`
(a table of layer class -> rule that users can extend):

1. **plan**: every leaf layer gets its rule and settings (config + per-layer
   overrides), or a :class:`SkippedLayer` record saying why it stays float;
2. **fold**: a BatchNormalization right after a linear weight layer is folded
   into it (int8 TFLite has no batch norm kernel); then the ranges are
   placed: a layer whose only consumer is a fused activation (ReLU6 after a
   folded BatchNormalization, as in MobileNetV2) needs no output range, and a
   weight layer whose input already carries an int8 range needs no input
   quantizer;
3. **rewrite**: :func:`~tfcompress.core.rewrite.rewrite_model` copies the
   model with each planned layer replaced by its rule's replacement.

Layers with no rule (Conv3D, Concatenate, recurrent and custom layers, ...)
are left as they are and listed in a warning, so the exported graph falls back
to float around them.
"""

from __future__ import annotations

import dataclasses
import enum
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import keras

from tfcompress.core.rewrite import (
    LayerSelection,
    Replacement,
    RewriteLog,
    iter_leaf_layers,
    layer_selector,
    rewrite_model,
)
from tfcompress.quantization import registry as quantizers_module
from tfcompress.quantization.activation import FoldedBatchNorm
from tfcompress.quantization.scheme import LayerPlan, QuantizeScheme, WeightRule
from tfcompress.quantization.uniform import MinMaxQuantizer

__all__ = ["CONFIG_NAMES", "QuantizeConfig", "SkipReason", "SkippedLayer", "quantize_model"]

# The accepted ``config`` strings (case-insensitive): the weight bits of the default quantizers.
CONFIG_NAMES: dict[str, int] = {f"int{bits}": bits for bits in range(2, 9)}
_OVERRIDE_KEYS = ("weight_bits", "kernel_quantizer", "activation_quantizer", "input_quantizer")


class SkipReason(str, enum.Enum):
    """Why ``quantize_model`` left a layer float."""

    OVERRIDE = "kept float by override"
    NOT_SELECTED = "not selected"
    NO_RULE = "no int8 rule for this layer type"
    OUTPUT_RANGES_OFF = "quantize_activation_layers=False"

    def __str__(self) -> str:
        return self.value


class SkippedLayer(NamedTuple):
    """A layer left float: qualified name, class name and :class:`SkipReason`."""

    name: str
    kind: str
    reason: SkipReason


@dataclasses.dataclass
class QuantizeConfig:
    """What :func:`quantize_model` does, model-wide and per layer.

    Attributes:
        weight_bits: Bits of the default kernel quantizers: symmetric
            per-channel for convolutions, per-tensor for Dense (TFLite's int8
            ``FULLY_CONNECTED`` takes per-tensor weights only) and
            Conv2DTranspose. 2 to 8.
        kernel_quantizer: If set, this quantizer for every kernel instead.
        activation_quantizer: Quantizer of each quantized layer's output.
        input_quantizer: Quantizer added to a quantized layer whose input does
            not come from another quantized layer (e.g. the model input).
        fold_batch_norm: Fold BatchNormalization into the preceding
            convolution/Dense (when that layer has no activation).
        quantize_activation_layers: Apply the scheme's ``"output"`` rules:
            ``Activation``/``ReLU`` (plain or ReLU6) become
            :class:`~tfcompress.layers.QuantizeActivation`, and
            ``Add``/``Subtract``/``Multiply``/average pooling are wrapped in
            :class:`~tfcompress.layers.QuantizeOutput`.
        overrides: ``{layer name or class (name): settings}`` where settings is
            a dict with any of ``weight_bits``, ``kernel_quantizer``,
            ``activation_quantizer``, ``input_quantizer``, or ``None`` to keep
            that layer float (mixed precision).
        scheme: The :class:`~tfcompress.transforms.QuantizeScheme` (layer class
            -> rule); default :meth:`QuantizeScheme.default`.
    """

    weight_bits: int = 8
    kernel_quantizer: Any = None
    activation_quantizer: Any = "int8_activation"
    input_quantizer: Any = "int8_activation"
    fold_batch_norm: bool = True
    quantize_activation_layers: bool = True
    overrides: Mapping[Any, Mapping[str, Any] | None] | None = None
    scheme: QuantizeScheme | None = None

    @classmethod
    def coerce(cls, config: Any) -> QuantizeConfig:
        """Accepts ``None``, a name of :data:`CONFIG_NAMES`, a dict or a config.

        Names are ``"int2"`` to ``"int8"`` in any case (``"INT4"`` is ``"int4"``),
        the bits of the default weight quantizers.

        Raises:
            ValueError: For another string (the message lists the accepted
                names) or unknown dict keys.
            TypeError: For a value of another type.
        """
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        if isinstance(config, str):
            if config.lower() in CONFIG_NAMES:
                return cls(weight_bits=CONFIG_NAMES[config.lower()])
            raise ValueError(
                f"config={config!r} is not a known name; expected one of "
                f"{', '.join(CONFIG_NAMES)} (any case; the weight bits), a dict of "
                "QuantizeConfig fields, or a QuantizeConfig"
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


# ---------------------------------------------------------------- step 1: plan


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


def _settings(layer, config: QuantizeConfig, overrides: dict) -> dict[str, Any] | None:
    """The layer's settings, or ``None`` if an override keeps it float."""
    settings: dict[str, Any] = {key: getattr(config, key) for key in _OVERRIDE_KEYS}
    # Class overrides first, then name overrides (the more specific wins).
    for key, value in overrides.items():
        if (isinstance(key, type) and isinstance(layer, key)) or key == type(layer).__name__:
            if value is None:
                return None
            settings.update(value)
    if layer.name in overrides:
        if overrides[layer.name] is None:
            return None
        settings.update(overrides[layer.name])
    return settings


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


def _quantizers(layer, rule, settings, where) -> dict[str, Any]:
    activation = quantizers_module.get(
        settings["activation_quantizer"], f"{where} activation_quantizer"
    )
    if rule.role != "weights":
        return {"activation_quantizer": activation}
    if settings["kernel_quantizer"] is not None:
        kernel = quantizers_module.get(settings["kernel_quantizer"], f"{where} kernel_quantizer")
    else:
        per_channel = isinstance(rule, WeightRule) and rule.per_channel
        kernel = MinMaxQuantizer(settings["weight_bits"], axis=-1 if per_channel else None)
    return {
        "kernel_quantizer": kernel,
        "activation_quantizer": activation,
        "input_quantizer": quantizers_module.get(
            settings["input_quantizer"], f"{where} input_quantizer"
        ),
    }


def _plan(model, config, scheme, layers) -> tuple[dict[int, LayerPlan], list[SkippedLayer]]:
    """Step 1: a :class:`LayerPlan` per layer to replace, a record per layer left float."""
    overrides = _validate_overrides(model, config.overrides)
    explicit = layers is not None
    selected = layer_selector(layers, model, argument="layers")
    plans: dict[int, LayerPlan] = {}
    skipped: list[SkippedLayer] = []
    for qualified, layer in iter_leaf_layers(model):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        rule = scheme.rule_for(layer)
        if rule is not None and rule.role == "pass_through":
            continue
        if getattr(layer, "is_quantization_aware", False):
            continue
        if rule is not None and rule.role == "output" and not config.quantize_activation_layers:
            skipped.append(
                SkippedLayer(qualified, type(layer).__name__, SkipReason.OUTPUT_RANGES_OFF)
            )
            continue
        if rule is None:
            if explicit and selected(layer):
                raise ValueError(
                    f"layers={layers!r} selects layer {qualified!r} of type "
                    f"{type(layer).__name__}, which quantize_model cannot quantize; supported "
                    f"types: {', '.join(scheme.class_names('weights') + scheme.class_names('output'))}"
                    " (add a rule to config.scheme for other layers)"
                )
            if not isinstance(layer, keras.layers.BatchNormalization):
                _check_copyable(qualified, layer)
            reason = SkipReason.NO_RULE if selected(layer) else SkipReason.NOT_SELECTED
            skipped.append(SkippedLayer(qualified, type(layer).__name__, reason))
            continue
        if not selected(layer):
            skipped.append(SkippedLayer(qualified, type(layer).__name__, SkipReason.NOT_SELECTED))
            continue
        settings = _settings(layer, config, overrides)
        if settings is None:
            skipped.append(SkippedLayer(qualified, type(layer).__name__, SkipReason.OVERRIDE))
            continue
        quantizers = _quantizers(layer, rule, settings, f"layer {qualified!r}")
        if rule.role == "output" and quantizers["activation_quantizer"] is None:
            continue  # activation_quantizer=None for this layer: nothing to record
        plans[id(layer)] = LayerPlan(qualified, layer, rule, settings=settings, **quantizers)
    return plans, skipped


# ---------------------------------------------------------------- step 2: fold and place ranges


def _producers(layer) -> list:
    found = []
    for node in getattr(layer, "_inbound_nodes", []):
        found.extend(parent.operation for parent in node.parent_nodes)
    return found


def _consumers(layer) -> list:
    return [node.operation for node in getattr(layer, "_outbound_nodes", [])]


def _folding_target(bn, plans) -> LayerPlan | None:
    """The weight layer ``bn`` can be folded into: its only producer, linear, channels last."""
    if type(bn) is not keras.layers.BatchNormalization:
        return None
    producers = _producers(bn)
    plan = plans.get(id(producers[0])) if len(producers) == 1 else None
    if plan is None or plan.rule.role != "weights" or plan.fold is not None:
        return None
    if not getattr(plan.rule, "folds_batch_norm", False):
        return None
    conv = plan.layer
    if len(conv._outbound_nodes) != 1 or conv.activation not in (None, keras.activations.linear):
        return None
    rank = len(conv.output.shape)
    axes = bn.axis if isinstance(bn.axis, (list, tuple)) else [bn.axis]
    channels_last = getattr(conv, "data_format", "channels_last") == "channels_last"
    if not channels_last or [a % rank for a in axes] != [rank - 1]:
        return None
    return plan


def _fold_batch_norms(model, plans, skipped) -> dict[int, LayerPlan]:
    """Step 2a: ``{id(bn): plan of the layer it folds into}``; folded BNs leave ``skipped``."""
    folds: dict[int, LayerPlan] = {}
    for _, layer in iter_leaf_layers(model):
        target = _folding_target(layer, plans)
        if target is not None:
            target.fold = layer
            folds[id(layer)] = target
    folded = {id(plan.fold) for plan in folds.values()}
    qualified = {name: layer for name, layer in iter_leaf_layers(model)}
    skipped[:] = [s for s in skipped if id(qualified.get(s.name)) not in folded]
    return folds


def _place_ranges(plans, folds, scheme) -> None:
    """Step 2b: drop output ranges TFLite fuses away, and input ranges already present."""
    for plan in plans.values():
        if plan.rule.role != "weights":
            continue
        chain = _consumers(plan.layer)
        if len(chain) == 1 and id(chain[0]) in folds:
            chain = _consumers(chain[0])
        consumer = plans.get(id(chain[0])) if len(chain) == 1 else None
        if consumer is not None and consumer.rule.fuses_into_producer(consumer.layer):
            plan.activation_quantizer = None

    memo: dict[int, bool] = {}

    def carries_range(op) -> bool:
        """Whether ``op``'s output already carries an int8 range."""
        key = id(op)
        if key not in memo:
            memo[key] = False  # the graph is acyclic; this guards re-entry
            if key in plans:
                memo[key] = plans[key].activation_quantizer is not None
            elif key in folds:
                memo[key] = carries_range(folds[key].layer)
            elif getattr(op, "is_quantization_aware", False):
                memo[key] = bool(
                    getattr(op, "activation_quantizer", getattr(op, "quantizer", None))
                )
            elif not isinstance(op, keras.layers.InputLayer) and isinstance(op, keras.layers.Layer):
                rule = scheme.rule_for(op)
                producers = _producers(op)
                memo[key] = (
                    rule is not None
                    and rule.role == "pass_through"
                    and bool(producers)
                    and all(carries_range(p) for p in producers)
                )
        return memo[key]

    for plan in plans.values():
        if plan.rule.role == "weights":
            producers = _producers(plan.layer)
            if producers and all(carries_range(p) for p in producers):
                plan.input_quantizer = None


# ---------------------------------------------------------------- step 3: rewrite


def _warn_left_float(skipped: list[SkippedLayer]) -> None:
    left = [s for s in skipped if s.reason is SkipReason.NO_RULE]
    if left:
        listed = ", ".join(f"{s.name} ({s.kind})" for s in left)
        warnings.warn(
            f"quantize_model left {len(left)} layer(s) float, having no int8 rule for them: "
            f"{listed}. TFLite runs them in float, with conversions around them; add a "
            "rule to QuantizeConfig(scheme=...) to quantize them.",
            stacklevel=3,
        )


def quantize_model(
    model: keras.Model,
    config: QuantizeConfig | Mapping[str, Any] | str | None = None,
    layers: LayerSelection = None,
    *,
    return_log: bool = False,
) -> keras.Model | tuple[keras.Model, RewriteLog]:
    """Returns a quantization-aware copy of a trained model, ready to fine-tune.

    Layers are replaced as the scheme says (default
    :meth:`~tfcompress.transforms.QuantizeScheme.default`): ``Dense``,
    ``Conv1D``, ``Conv2D``, ``DepthwiseConv2D``, ``SeparableConv2D`` and
    ``Conv2DTranspose`` by ``Quant*`` layers with the same configuration and
    weights; ``Activation``/``ReLU`` layers by ``QuantizeActivation``; ``Add``
    and average pooling get an output range; a ``BatchNormalization`` that
    follows a linear weight layer is folded into it. The first quantized
    layer(s) also quantize their input. The model's input and output structure
    (dicts, lists, nesting) and its operation nodes (``x[:, 0]``,
    ``keras.ops`` calls) are kept. Fine-tune the copy for a few epochs, then
    ``tfcompress.tflite_export.export(qat_model, path, quantization="int8")``
    writes a full-integer file without calibration data. The user's model is
    never modified.

    Args:
        model: A built Sequential or Functional model (nested models are
            entered).
        config: ``None`` (8-bit), a name of :data:`CONFIG_NAMES` (``"int2"`` to
            ``"int8"``, any case: the weight bits), a dict of
            :class:`QuantizeConfig` fields, or a ``QuantizeConfig``. Per-layer
            overrides (by layer name or class) give mixed precision; ``scheme``
            adds rules for other layer classes.
        layers: Which layers to quantize (names, classes, class names or a
            predicate; default all layers the scheme has a rule for). Naming a
            layer that cannot be quantized is an error.
        return_log: Also return the :class:`RewriteLog` (replaced layers, and
            the :class:`SkippedLayer` records of layers left float).

    Returns:
        The new model, or ``(model, log)`` with ``return_log``.

    Raises:
        ValueError: For bad config values (unknown names or quantizers, bits
            out of range), an override or selection that matches no layer, a
            selected layer that cannot be quantized, or a layer that cannot be
            copied.
        TypeError: For subclassed models.

    Warns:
        UserWarning: Listing the layers (name and class) left float for lack of
            a rule.

    Example:
        >>> qat = tfcompress.quantize_model(model, {"overrides": {"logits": {"weight_bits": 8}},
        ...                                         "weight_bits": 4})
        >>> qat.compile(...); qat.fit(x, y, epochs=3)
        >>> tfcompress.tflite_export.export(qat, "model.tflite", quantization="int8")
    """
    config = QuantizeConfig.coerce(config)
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    scheme = config.scheme if config.scheme is not None else QuantizeScheme.default()
    if not isinstance(scheme, QuantizeScheme):
        raise TypeError(f"config.scheme must be a QuantizeScheme, got {type(scheme).__name__}")

    plans, skipped = _plan(model, config, scheme, layers)
    folds = _fold_batch_norms(model, plans, skipped) if config.fold_batch_norm else {}
    _place_ranges(plans, folds, scheme)

    def replace(layer):
        plan = plans.get(id(layer))
        if plan is not None:
            return plan.rule.replacement(layer, plan)
        if id(layer) in folds:
            return Replacement(FoldedBatchNorm(name=layer.name))
        return None

    new_model, log = rewrite_model(model, replace)
    log.skipped.extend(skipped)
    _warn_left_float(skipped)
    return (new_model, log) if return_log else new_model
