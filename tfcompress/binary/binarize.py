"""``binarize_model``: swap Dense/Conv2D/DepthwiseConv2D layers for binary ones, weights kept."""

from __future__ import annotations

import keras
import numpy as np

from tfcompress.binary.layers import BinaryConv2D, BinaryDense, BinaryDepthwiseConv2D
from tfcompress.core.rewrite import (
    LayerSelection,
    Replacement,
    iter_leaf_layers,
    layer_selector,
    rewrite_model,
)
from tfcompress.quantization import registry
from tfcompress.quantization.base import Quantizer

__all__ = ["binarize_model"]

# Exact types: subclasses (Conv2DTranspose, our own Binary layers, ...) are not converted.
_TARGETS = {
    keras.layers.Dense: BinaryDense,
    keras.layers.Conv2D: BinaryConv2D,
    keras.layers.DepthwiseConv2D: BinaryDepthwiseConv2D,
}


def _initialize(latent_clip: float | None):
    def initialize(new: keras.layers.Layer, old: keras.layers.Layer) -> None:
        values = [np.asarray(keras.ops.convert_to_numpy(w)) for w in old.weights]
        if latent_clip is not None:
            values[0] = np.clip(values[0], -latent_clip, latent_clip)
        # The quantizers' own state comes after the copied weights: learned ternary scales
        # (TTQ) start at the kept entries' mean magnitude; other state (IR-Net's progress)
        # keeps its initial value.
        for variable in new.weights[len(values) :]:
            if variable.name.endswith("_scale") and hasattr(new.kernel_quantizer, "threshold"):
                kernel = values[0]
                channels = kernel.shape[-1] * (kernel.shape[-2] if new._depthwise else 1)
                flat = np.abs(kernel).reshape(-1, channels)
                kept = flat > new.kernel_quantizer.threshold * flat.max(axis=0)
                scale = (flat * kept).sum(axis=0) / np.maximum(kept.sum(axis=0), 1)
                values.append(scale.astype(np.float32))
            else:
                values.append(np.asarray(keras.ops.convert_to_numpy(variable)))
        new.set_weights(values)

    return initialize


def binarize_model(
    model: keras.Model,
    layers: LayerSelection = None,
    *,
    kernel_quantizer: str | dict | Quantizer = "magnitude_aware_sign",
    input_quantizer: str | dict | Quantizer | None = None,
    latent_clip: float | None = 1.0,
    keep_first: bool = True,
    keep_last: bool = True,
    verbose: bool = False,
) -> keras.Model:
    """Copies ``model`` with its Dense/Conv2D/DepthwiseConv2D layers made binary (or ternary).

    The converted layers keep their names, arguments and weights (the float
    kernel becomes the latent kernel, clipped to ``latent_clip``); every
    other layer is copied as it is. The first and last convertible layers
    stay float by default: they hold few weights and cost the most accuracy
    when binarized.

    Binary nets train best with BatchNormalization after each binary layer,
    which this transform does not insert, and a sign input quantizer after a
    ReLU sees only +1 (ReLU outputs are >= 0): with ``input_quantizer``, the
    layers feeding binarized inputs should have symmetric activations. Build
    such models directly with the Binary layers (see ``docs/binary.md``).

    Args:
        model: A built Sequential or Functional model (nested ones included).
        layers: Restricts the conversion to these layers (names, classes or
            a predicate); None converts every eligible layer.
        kernel_quantizer: Quantizer of the kernels (see
            ``tfcompress.quantizers.PRESETS``); the default keeps a
            per-channel scale, so the converted model starts close to the float one.
        input_quantizer: Quantizer of the converted layers' inputs; None
            keeps them float (binary weights only).
        latent_clip: Latent-weight clip of the new layers.
        keep_first: Leave the first eligible layer float.
        keep_last: Leave the last eligible layer float.
        verbose: Print which layers were converted.

    Returns:
        The binarized copy (the original is not modified).

    Raises:
        ValueError: For an unknown quantizer name, a ``layers`` selection
            that matches nothing, or nothing left to convert.
        TypeError: For a subclassed model.

    Example:
        >>> binary = tfc.binarize_model(trained_cnn)
        >>> binary.compile(...); binary.fit(...)   # fine-tune
    """
    kernel_q = registry.get(kernel_quantizer, "kernel_quantizer")
    if kernel_q is None:
        raise ValueError("kernel_quantizer must name a binary/ternary quantizer, got None")
    input_q = registry.get(input_quantizer, "input_quantizer")  # validated before any change
    selected = layer_selector(layers, model)
    eligible = [layer for _, layer in iter_leaf_layers(model) if type(layer) in _TARGETS]
    skip: dict[int, str] = {}
    if eligible and keep_first:
        skip[id(eligible[0])] = "first layer kept in float (keep_first=True)"
    if eligible and keep_last:
        skip.setdefault(id(eligible[-1]), "last layer kept in float (keep_last=True)")
    chosen = [layer for layer in eligible if id(layer) not in skip and selected(layer)]
    if not chosen:
        names = ", ".join(f"{layer.name} ({type(layer).__name__})" for layer in eligible)
        raise ValueError(
            f"binarize_model(layers={layers!r}, keep_first={keep_first}, keep_last={keep_last}) "
            f"leaves no layer of model {model.name!r} to binarize; eligible layers "
            f"(Dense, Conv2D, DepthwiseConv2D) are: {names or 'none'}"
            + ("; keep_first=False / keep_last=False converts those too" if eligible else "")
        )
    chosen_ids = {id(layer) for layer in chosen}

    def replace(layer: keras.layers.Layer) -> Replacement | None:
        if id(layer) not in chosen_ids:
            return None
        config = layer.get_config()
        config.update(
            kernel_quantizer=registry.serialize(kernel_q),
            input_quantizer=registry.serialize(input_q),
            latent_clip=latent_clip,
        )
        new = _TARGETS[type(layer)].from_config(config)
        return Replacement(new, initialize=_initialize(latent_clip))

    new_model, log = rewrite_model(model, replace)
    for name, layer in iter_leaf_layers(model):
        if id(layer) in skip:
            log.skipped.append((name, type(layer).__name__, skip[id(layer)]))
    if verbose:
        print(log.summary())
    return new_model
