"""The quantization scheme: a table of layer class -> rule that ``quantize_model`` follows.

A rule says what one kind of layer becomes in a quantization-aware model, in
one of three roles:

* ``"weights"``: the layer has a kernel and becomes a ``Quant*`` layer with a
  kernel quantizer, an output quantizer and (where its input carries no int8
  range yet) an input quantizer; a BatchNormalization right after it can be
  folded into its kernel (:class:`WeightRule`);
* ``"output"``: the layer has no weights but TFLite needs a range on its
  output to run it in int8: Activation/ReLU (:class:`ActivationRule`), Add,
  average pooling (:class:`OutputRangeRule`);
* ``"pass_through"``: the layer only moves values, so its int8 output keeps
  its input's range (pooling by max, reshapes, dropout; :class:`PassThroughRule`).

Extend the default scheme with a rule for your own layer::

    scheme = QuantizeScheme.default().register(MyScale, OutputRangeRule())
    qat = tfc.quantize_model(model, tfc.transforms.QuantizeConfig(scheme=scheme))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import keras
import numpy as np

from tfcompress.core.rewrite import Replacement
from tfcompress.quantization.activation import FoldedBatchNorm, QuantizeActivation, QuantizeOutput
from tfcompress.quantization.conv import QuantConv1D, QuantConv2D, QuantDepthwiseConv2D
from tfcompress.quantization.conv_transpose import QuantConv2DTranspose
from tfcompress.quantization.dense import QuantDense
from tfcompress.quantization.separable_conv import QuantSeparableConv2D

__all__ = [
    "ActivationRule",
    "LayerPlan",
    "OutputRangeRule",
    "PassThroughRule",
    "QuantizeRule",
    "QuantizeScheme",
    "WeightRule",
]


@dataclasses.dataclass
class LayerPlan:
    """What ``quantize_model`` decided for one layer, handed to its rule's ``replacement``.

    Attributes:
        name: The layer's qualified name (``outer/inner`` in nested models).
        layer: The original layer.
        rule: The rule that applies.
        kernel_quantizer: Kernel quantizer (``"weights"`` rules).
        activation_quantizer: Output quantizer; ``None`` where TFLite fuses the
            next activation into this op.
        input_quantizer: Input quantizer; ``None`` where the input already
            carries an int8 range.
        fold: The BatchNormalization folded into this layer, if any.
        settings: The layer's resolved settings (config + overrides).
    """

    name: str
    layer: keras.layers.Layer
    rule: QuantizeRule
    kernel_quantizer: Any = None
    activation_quantizer: Any = None
    input_quantizer: Any = None
    fold: keras.layers.Layer | None = None
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class QuantizeRule:
    """How ``quantize_model`` treats layers of one class; subclass it for your own layer.

    Attributes:
        role: ``"weights"``, ``"output"`` or ``"pass_through"`` (see the module docs).
        match_subclasses: Whether the rule also applies to subclasses of the
            class it is registered for (a subclass may compute something else,
            so weight rules match the exact class only).
    """

    role: ClassVar[str] = "output"
    match_subclasses: bool = False

    def applies(self, layer: keras.layers.Layer) -> bool:
        """Whether this rule can handle this particular layer (its config may rule it out)."""
        return True

    def fuses_into_producer(self, layer: keras.layers.Layer) -> bool:
        """Whether TFLite fuses this layer into the op before it (so that op needs no range)."""
        return False

    def replacement(self, layer: keras.layers.Layer, plan: LayerPlan) -> Replacement | None:
        """The new layer (and how to initialise it), or ``None`` to keep a copy of ``layer``."""
        return None


class PassThroughRule(QuantizeRule):
    """The layer only moves values: its int8 output keeps its input's range; it is copied."""

    role = "pass_through"

    def __init__(self, match_subclasses: bool = True) -> None:
        self.match_subclasses = match_subclasses


class OutputRangeRule(QuantizeRule):
    """Wraps the layer in :class:`QuantizeOutput`, which records its output range."""

    role = "output"

    def replacement(self, layer, plan):
        config = {**layer.get_config(), "name": f"{layer.name}_float"}
        inner = type(layer).from_config(config)
        return Replacement(QuantizeOutput(inner, plan.activation_quantizer, name=layer.name))


class ActivationRule(QuantizeRule):
    """Replaces an ``Activation`` layer or a plain ReLU/ReLU6 with :class:`QuantizeActivation`."""

    role = "output"

    def applies(self, layer):
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

    @staticmethod
    def activation_name(layer) -> Any:
        if isinstance(layer, keras.layers.ReLU):
            return "relu" if layer.get_config().get("max_value") is None else "relu6"
        return layer.get_config()["activation"]

    def fuses_into_producer(self, layer):
        return self.activation_name(layer) in ("relu", "relu6")

    def replacement(self, layer, plan):
        return Replacement(
            QuantizeActivation(
                plan.activation_quantizer, activation=self.activation_name(layer), name=layer.name
            )
        )


class WeightRule(QuantizeRule):
    """Replaces a layer with a kernel by its ``Quant*`` twin, weights copied by variable name.

    Args:
        quant_class: The quantization-aware class; ``quant_class.from_config``
            must accept the original layer's config plus ``kernel_quantizer``,
            ``activation_quantizer`` and ``input_quantizer``.
        per_channel: Default kernel quantizer per output channel (axis -1 of
            the kernel as the quant class shows it) or per tensor.
        folds_batch_norm: Whether a BatchNormalization after the layer may be
            folded into its kernel and bias.
    """

    role = "weights"

    def __init__(
        self, quant_class: type, per_channel: bool = True, folds_batch_norm: bool = True
    ) -> None:
        self.quant_class = quant_class
        self.per_channel = per_channel
        self.folds_batch_norm = folds_batch_norm

    def layer_config(self, layer, plan: LayerPlan) -> dict[str, Any]:
        config = layer.get_config()
        if plan.fold is not None:
            config["use_bias"] = True
        config.update(
            kernel_quantizer=plan.kernel_quantizer,
            activation_quantizer=plan.activation_quantizer,
            input_quantizer=plan.input_quantizer,
        )
        return config

    def scale_output_channels(self, new_layer, old_layer, factor: np.ndarray) -> None:
        """Sets ``new_layer``'s kernel to ``old_layer``'s with output channel ``c`` times ``factor[c]``."""
        kernel = np.asarray(keras.ops.convert_to_numpy(old_layer.kernel.value), np.float64)
        _variable(new_layer, "kernel").assign((kernel * factor).astype("float32"))

    def replacement(self, layer, plan):
        new = self.quant_class.from_config(self.layer_config(layer, plan))
        bn = plan.fold

        def initialize(new_layer, old_layer):
            _copy_variables(new_layer, old_layer)
            if bn is not None:
                factor, bias = _batch_norm_affine(old_layer, bn)
                self.scale_output_channels(new_layer, old_layer, factor)
                new_layer.bias.assign(bias.astype("float32"))
            new_layer.initialize_quantizers()

        return Replacement(new, initialize)


class _DepthwiseRule(WeightRule):
    def scale_output_channels(self, new_layer, old_layer, factor):
        kernel = np.asarray(keras.ops.convert_to_numpy(old_layer.kernel.value), np.float64)
        factor = factor.reshape(kernel.shape[2], kernel.shape[3])
        _variable(new_layer, "kernel").assign((kernel * factor).astype("float32"))


class _SeparableRule(WeightRule):
    def layer_config(self, layer, plan):
        config = super().layer_config(layer, plan)
        # The depthwise output always needs a range, even when the final one is fused away.
        config["intermediate_quantizer"] = plan.settings.get("activation_quantizer")
        return config

    def scale_output_channels(self, new_layer, old_layer, factor):
        pointwise = np.asarray(
            keras.ops.convert_to_numpy(old_layer.pointwise_kernel.value), np.float64
        )
        new_layer.pointwise_kernel.assign((pointwise * factor).astype("float32"))


class _TransposeRule(WeightRule):
    def scale_output_channels(self, new_layer, old_layer, factor):
        kernel = np.asarray(keras.ops.convert_to_numpy(old_layer.kernel.value), np.float64)
        _variable(new_layer, "kernel").assign((kernel * factor[:, None]).astype("float32"))


def _variable(layer, name: str):
    # QuantDense keeps its kernel in ``_kernel`` (``kernel`` is a LoRA-aware property).
    if name == "kernel" and hasattr(layer, "_kernel"):
        return layer._kernel
    return getattr(layer, name)


def _copy_variables(new_layer, old_layer) -> None:
    """Copies every variable of ``old_layer`` into the variable of the same name in ``new_layer``."""
    by_name = {v.name: v for v in new_layer.weights}
    for variable in old_layer.weights:
        if variable.name not in by_name:
            raise ValueError(
                f"{type(new_layer).__name__} has no variable {variable.name!r} to take "
                f"{type(old_layer).__name__} {old_layer.name!r}'s weights"
            )
        by_name[variable.name].assign(variable.value)


def _batch_norm_affine(old_layer, bn) -> tuple[np.ndarray, np.ndarray]:
    """``(factor, bias)`` with ``bn(old(x)) = factor * (old(x) - old_bias) + bias`` at inference."""
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
    return factor, beta + (old_bias - mean) * factor


class QuantizeScheme:
    """A table of layer class -> :class:`QuantizeRule`; ``quantize_model`` follows it.

    Lookup walks the layer's class hierarchy: the exact class's rule wins; a
    base class's rule applies only if it has ``match_subclasses``. Layers that
    are already quantization-aware are never touched.

    Args:
        rules: ``{layer class: rule}``.

    Example:
        >>> scheme = QuantizeScheme.default().register(MyScale, OutputRangeRule())
        >>> qat = tfc.quantize_model(model, {"scheme": scheme})
    """

    def __init__(self, rules: Mapping[type, QuantizeRule] | None = None) -> None:
        self.rules: dict[type, QuantizeRule] = {}
        for layer_class, rule in (rules or {}).items():
            self.register(layer_class, rule)

    def register(self, layer_class: type, rule: QuantizeRule) -> QuantizeScheme:
        """Sets the rule of ``layer_class`` (replacing any); returns the scheme, for chaining.

        Raises:
            TypeError: If ``layer_class`` is not a Keras layer class or ``rule``
                not a :class:`QuantizeRule`.
        """
        if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
            raise TypeError(f"layer_class must be a keras.layers.Layer class, got {layer_class!r}")
        if not isinstance(rule, QuantizeRule):
            raise TypeError(f"rule must be a QuantizeRule, got {type(rule).__name__}: {rule!r}")
        self.rules[layer_class] = rule
        return self

    def copy(self) -> QuantizeScheme:
        return QuantizeScheme(self.rules)

    def rule_for(self, layer: keras.layers.Layer) -> QuantizeRule | None:
        """The rule that applies to ``layer``, or ``None``."""
        for cls in type(layer).__mro__:
            rule = self.rules.get(cls)
            if rule is not None and (cls is type(layer) or rule.match_subclasses):
                return rule if rule.applies(layer) else None
        return None

    def class_names(self, role: str) -> list[str]:
        return [cls.__name__ for cls, rule in self.rules.items() if rule.role == role]

    @classmethod
    def default(cls) -> QuantizeScheme:
        """A new copy of the built-in scheme (every layer class TFLite runs in int8)."""
        layers = keras.layers
        rules: dict[type, QuantizeRule] = {
            layers.Dense: WeightRule(QuantDense, per_channel=False),  # per-tensor FULLY_CONNECTED
            layers.Conv1D: WeightRule(QuantConv1D),
            layers.Conv2D: WeightRule(QuantConv2D),
            layers.DepthwiseConv2D: _DepthwiseRule(QuantDepthwiseConv2D),
            layers.SeparableConv2D: _SeparableRule(QuantSeparableConv2D),
            layers.Conv2DTranspose: _TransposeRule(QuantConv2DTranspose, per_channel=False),
            layers.Activation: ActivationRule(),
            layers.ReLU: ActivationRule(),
        }
        for output in (
            layers.Add,
            layers.Subtract,
            layers.Multiply,
            layers.AveragePooling1D,
            layers.AveragePooling2D,
            layers.GlobalAveragePooling1D,
            layers.GlobalAveragePooling2D,
        ):
            rules[output] = OutputRangeRule()
        for moving in (
            layers.InputLayer,
            layers.MaxPooling1D,
            layers.MaxPooling2D,
            layers.MaxPooling3D,
            layers.GlobalMaxPooling1D,
            layers.GlobalMaxPooling2D,
            layers.Flatten,
            layers.Reshape,
            layers.Dropout,
            layers.SpatialDropout1D,
            layers.SpatialDropout2D,
            layers.GaussianNoise,
            layers.Identity,
            FoldedBatchNorm,
            layers.ZeroPadding1D,
            layers.ZeroPadding2D,
            layers.Cropping1D,
            layers.Cropping2D,
            layers.UpSampling2D,
        ):
            rules[moving] = PassThroughRule()
        return cls(rules)
