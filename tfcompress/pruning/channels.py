"""Which layers' output channels ``shrink_model`` can physically remove.

Channel pruning only pays when the pruned channels disappear: a layer's output
channels can be dropped when every consumer is another Dense/Conv layer (whose
input then narrows) or a layer that keeps channels apart on the way there.
Used by channel pruning in the benchmark suite and by budgeted channel
allocation (``tfc.allocate.sparsity(..., structure="channel")``).
"""

from __future__ import annotations

from collections import defaultdict

import keras

from tfcompress.pruning.shrink import PER_CHANNEL_LAYERS

__all__ = ["channel_prunable_layers", "consumers_of", "plain_channel_layer"]

# Layers a removed channel passes through unchanged in number: exactly what shrink_model
# follows (its per-channel layers, and Flatten).
_PASS_THROUGH = (*PER_CHANNEL_LAYERS, keras.layers.Flatten)
_CHANNEL_LAYERS = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D)


def plain_channel_layer(layer: keras.layers.Layer) -> bool:
    """A Dense/Conv1D/Conv2D layer (not a subclass) without groups: its channels can go."""
    return type(layer) in _CHANNEL_LAYERS and getattr(layer, "groups", 1) == 1


def consumers_of(model: keras.Model) -> dict[str, list[keras.layers.Layer]]:
    """Layer name -> the layers that read its output (the model's top-level graph)."""
    found: dict[str, list[keras.layers.Layer]] = defaultdict(list)
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for tensor in node.input_tensors:
                found[tensor._keras_history.operation.name].append(layer)
    return found


def channel_prunable_layers(model: keras.Model) -> list[str]:
    """Names of the Dense/Conv layers whose pruned output channels ``shrink_model`` can remove.

    A layer qualifies when every path from its output, through layers that
    keep channels apart (BatchNorm, activations, pooling, dropout, padding,
    Flatten, depthwise convolutions with depth multiplier 1), ends in the
    input of another Dense/Conv layer. Channels that reach a model output
    (the classifier's logits), a residual ``Add``, attention or a
    normalization across channels stay, so pruning them would cost accuracy
    for nothing; those layers are left out.

    Raises:
        ValueError: If no layer qualifies.
    """
    consumers = consumers_of(model)
    outputs = {id(t._keras_history.operation) for t in model.outputs}

    def ends_in_inputs(layer: keras.layers.Layer) -> bool:
        if id(layer) in outputs or not consumers[layer.name]:
            return False
        for nxt in consumers[layer.name]:
            if plain_channel_layer(nxt):
                continue
            depthwise = isinstance(nxt, keras.layers.DepthwiseConv2D) and nxt.depth_multiplier == 1
            if not (isinstance(nxt, _PASS_THROUGH) or depthwise) or not ends_in_inputs(nxt):
                return False
        return True

    names = [layer.name for layer in model.layers if plain_channel_layer(layer)]
    chosen = [name for name in names if ends_in_inputs(model.get_layer(name))]
    if not chosen:
        raise ValueError(
            f"model {model.name!r} has no Dense/Conv layer whose output channels shrink_model "
            f"could remove (candidates {names} all reach an output, a merge or a layer that "
            "mixes channels)"
        )
    return chosen
