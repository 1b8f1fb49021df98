"""Which weights of a layer can be pruned, and which layers of a model a user selected.

Stock Keras layers are known by class. Any other layer joins pruning by
defining a method (the *prunable-weights hook*)::

    class MyLayer(keras.layers.Layer):
        def prunable_weights(self):
            # variables, or PrunableWeight(variable, channel_axes) to say which
            # axes are output channels (None: the layer has no channels)
            return [PrunableWeight(self.kernel, channel_axes=(-1,))]

A layer without the hook but with a floating ``kernel`` of rank >= 2 is
treated like Dense (output channels on the last axis).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras

from tfcompress.core.protocols import PrunableLayer
from tfcompress.core.walk import LayerSelection, layer_selector, walk_layers

__all__ = ["PrunableWeight", "find_prunable", "prunable_weights"]


@dataclasses.dataclass(frozen=True, eq=False)
class PrunableWeight:
    """A weight that pruning may zero.

    Attributes:
        variable: The ``keras.Variable``.
        channel_axes: Its output-channel axes (e.g. ``(-1,)`` for a Conv2D
            kernel, ``(-2, -1)`` for a depthwise kernel); ``None`` when the
            weight has no channels (an embedding table), which refuses channel
            pruning.
        layer: The layer that owns it (set by :func:`find_prunable`).
    """

    variable: Any
    channel_axes: tuple[int, ...] | None = (-1,)
    layer: Any = None

    @property
    def name(self) -> str:
        layer = getattr(self.layer, "name", "?")
        return f"{layer}/{self.variable.name}"


def _einsum_channel_axes(layer: keras.layers.EinsumDense) -> tuple[int, ...] | None:
    inputs, rest = layer.equation.split(",")
    kernel, output = rest.split("->")
    free = tuple(i for i, c in enumerate(kernel) if c in output and c not in inputs)
    return free or None


def _is_float(variable: Any) -> bool:
    return "float" in keras.backend.standardize_dtype(variable.dtype)


def prunable_weights(layer: keras.layers.Layer) -> list[PrunableWeight]:
    """The prunable weights of one built layer (empty when it has none).

    Raises:
        TypeError: If the layer's ``prunable_weights()`` hook returns something
            other than variables or :class:`PrunableWeight` objects.
    """
    layers = keras.layers
    if isinstance(layer, PrunableLayer):
        found = []
        for item in layer.prunable_weights():
            if isinstance(item, PrunableWeight):
                found.append(dataclasses.replace(item, layer=layer))
            elif isinstance(item, keras.Variable):
                found.append(PrunableWeight(item, (-1,), layer))
            else:
                raise TypeError(
                    f"{type(layer).__name__}.prunable_weights() must return variables or "
                    f"PrunableWeight objects, got {type(item).__name__}"
                )
        return found
    if not layer.built:
        return []
    if isinstance(layer, (layers.DepthwiseConv1D, layers.DepthwiseConv2D)):
        kernel = getattr(layer, "depthwise_kernel", None) or layer.kernel
        return [PrunableWeight(kernel, (-2, -1), layer)]
    if isinstance(layer, (layers.SeparableConv1D, layers.SeparableConv2D)):
        return [PrunableWeight(layer.pointwise_kernel, (-1,), layer)]
    if isinstance(layer, (layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose)):
        return [PrunableWeight(layer.kernel, (-2,), layer)]
    if isinstance(layer, layers.Embedding):
        variable = getattr(layer, "embeddings", None)
        ok = variable is not None and _is_float(variable)
        return [PrunableWeight(variable, None, layer)] if ok else []
    if isinstance(layer, layers.EinsumDense):
        ok = _is_float(layer.kernel)
        return [PrunableWeight(layer.kernel, _einsum_channel_axes(layer), layer)] if ok else []
    kernel = getattr(layer, "kernel", None)
    if isinstance(kernel, keras.Variable) and len(kernel.shape) >= 2 and _is_float(kernel):
        return [PrunableWeight(kernel, (-1,), layer)]
    return []


# The one selection type (kept under this name for the pruning modules that import it).
LayerSelector = LayerSelection


def find_prunable(model: keras.Model, layers: LayerSelector = None) -> list[PrunableWeight]:
    """The prunable weights of the selected layers of ``model`` (nested models walked).

    Args:
        model: A built Keras model.
        layers: A :data:`~tfcompress.core.walk.LayerSelection`: ``None``
            (every layer with a prunable weight), a layer name or class name,
            a layer class, a list of those, or a predicate ``layer -> bool``.

    Returns:
        The weights, in model order.

    Raises:
        TypeError: For a selection item that is not a name or a layer class.
        ValueError: If the model is not built, a name matches no layer, or
            the selection matches no prunable layer.
    """
    if not getattr(model, "built", False):
        raise ValueError(
            f"model {getattr(model, 'name', model)!r} is not built: build it (call it on data "
            "or start it with keras.Input) before pruning"
        )
    # Pruning reaches inside wrappers (the LSTM of a Bidirectional), so sublayers are walked.
    selected = layer_selector(layers, model, sublayers=True, require_match=False)
    chosen = [layer for _, layer in walk_layers(model, sublayers=True) if selected(layer)]
    found = [w for layer in chosen for w in prunable_weights(layer)]
    if not found:
        raise ValueError(
            f"layers={layers!r} matches no prunable layer in model {model.name!r} "
            "(prunable: layers with a kernel, depthwise kernel or embeddings, or a "
            "prunable_weights() method)"
        )
    return found
