"""Attention-head pruning: whole heads of ``keras.layers.MultiHeadAttention``.

A head ``h`` owns a slice of four kernels: the query, key and value
projections ``(d_model, heads, head_dim)`` along their axis 1, and the output
projection ``(heads, head_dim, d_model)`` along its axis 0. Seen through the
pruning package's matrix view with that axis as the only "channel" axis, each
kernel's channels *are* its heads, so the masks, schedules and criteria of
channel pruning apply unchanged; what is new is that the four kernels of one
layer are scored together (the criterion's head scores summed over them) and
lose the same heads. The query, key and value biases of a pruned head follow
its mask.

With its value projection zero a head outputs its value bias for every query
(attention weights sum to one), a constant that the output projection turns
into a constant vector: :func:`shrink_attention` folds it into the output bias
and rebuilds the layer with fewer heads, so the outputs do not change.

Reference: Michel, Levy and Neubig, "Are Sixteen Heads Really Better than
One?" (NeurIPS 2019): importance of whole heads and their removal; Voita et
al. (ACL 2019) for learned head gates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from tfcompress.core.walk import LayerSelection, layer_selector, walk_layers
from tfcompress.pruning.masks import PruningCriterion, matrix_view
from tfcompress.pruning.prunable import PrunableWeight

__all__ = ["attention_head_targets", "head_masks", "shrink_attention"]

#: The projections of a MultiHeadAttention layer and their head axis.
_PROJECTIONS = (("_query_dense", 1), ("_key_dense", 1), ("_value_dense", 1), ("_output_dense", 0))


def _projections(layer: keras.layers.MultiHeadAttention) -> list[tuple[Any, int]]:
    found = []
    for attribute, axis in _PROJECTIONS:
        dense = getattr(layer, attribute, None)
        kernel = getattr(dense, "kernel", None)
        if kernel is None or len(kernel.shape) != 3 or kernel.shape[axis] != layer.num_heads:
            raise ValueError(
                f"MultiHeadAttention layer {layer.name!r}: its {attribute.strip('_')} kernel "
                f"{None if kernel is None else tuple(kernel.shape)} has no axis of "
                f"{layer.num_heads} heads at position {axis}; is the layer built?"
            )
        found.append((dense, axis))
    return found


def attention_head_targets(
    model: keras.Model, layers: LayerSelection = None
) -> tuple[list[PrunableWeight], list[list[int]]]:
    """The four projection kernels of every selected MultiHeadAttention layer, and groups.

    Returns:
        ``(targets, groups)``: targets carry their head axis as their only
        channel axis; ``groups[i]`` lists the indices of layer ``i``'s four.

    Raises:
        ValueError: The selection holds a layer that is not a MultiHeadAttention
            (named in the message), or the model has none.
    """
    selected = layer_selector(layers, model, sublayers=True, require_match=False)
    every = [layer for _, layer in walk_layers(model, sublayers=True)]
    projections = {  # the attention layers' own sublayers are part of them, not a wrong pick
        id(getattr(owner, attribute, None))
        for owner in every
        if isinstance(owner, keras.layers.MultiHeadAttention)
        for attribute, _ in _PROJECTIONS
    }
    attention = []
    for layer in every:
        if not selected(layer):
            continue
        if isinstance(layer, keras.layers.MultiHeadAttention):
            attention.append(layer)
        elif layers is not None and id(layer) not in projections:
            raise ValueError(
                f"granularity='head' prunes keras.layers.MultiHeadAttention layers, but "
                f"layers={layers!r} selects {layer.name!r}, a {type(layer).__name__}; select "
                "attention layers only (prune FFN neurons with granularity='channel')"
            )
    if not attention:
        raise ValueError(
            f"granularity='head' found no keras.layers.MultiHeadAttention layer in model "
            f"{model.name!r} (layers={layers!r})"
        )
    targets: list[PrunableWeight] = []
    groups: list[list[int]] = []
    for layer in attention:
        group = []
        for dense, axis in _projections(layer):
            group.append(len(targets))
            targets.append(PrunableWeight(dense.kernel, (axis,), dense))
        groups.append(group)
    return targets, groups


def head_masks(
    weights: Sequence[np.ndarray],
    groups: Sequence[Sequence[int]],
    channel_axes: Sequence[Sequence[int]],
    sparsity: float,
    criterion: PruningCriterion,
    *,
    scope: str = "layer",
    gradients: Sequence[np.ndarray | None] | None = None,
) -> list[np.ndarray]:
    """0/1 masks that prune whole heads: per layer ``round(sparsity * heads)`` heads
    (``scope="layer"``), or the lowest heads of all layers by score relative to their
    layer's mean (``"global"``, ``round(sparsity * all heads)``); a layer keeps one head.

    A head's score is the criterion's reduction of each of its four kernel
    slices (e.g. the mean |w| for magnitude), summed over the four.
    """
    grads = list(gradients) if gradients is not None else [None] * len(weights)
    scores = []
    for group in groups:
        total = 0.0
        for index in group:
            weight = np.asarray(weights[index], np.float64)
            gradient = None if grads[index] is None else np.asarray(grads[index], np.float64)
            view = matrix_view(criterion.contributions(weight, gradient), channel_axes[index])
            total = total + np.asarray(criterion.reduce(view, axis=0), np.float64)
        scores.append(total)
    keeps = []
    if scope == "layer":
        for score in scores:
            count = min(round(sparsity * score.size), score.size - 1)
            keep = np.ones(score.size, bool)
            keep[np.argsort(score, kind="stable")[:count]] = False
            keeps.append(keep)
    else:
        relative = [s / (float(np.mean(s)) or 1.0) for s in scores]
        for r in relative:
            r[int(np.argmax(r))] = np.inf  # every layer keeps a head
        flat = np.concatenate(relative)
        count = min(round(sparsity * flat.size), flat.size - len(relative))
        keep_all = np.ones(flat.size, bool)
        keep_all[np.argsort(flat, kind="stable")[:count]] = False
        keeps = np.split(keep_all, np.cumsum([r.size for r in relative])[:-1])
    masks: list[np.ndarray] = [np.ones(np.shape(w), np.float32) for w in weights]
    for group, keep in zip(groups, keeps):
        for index in group:
            (axis,) = channel_axes[index]
            shape = [1] * np.ndim(weights[index])
            shape[axis] = keep.size
            masks[index] = np.broadcast_to(keep.reshape(shape), np.shape(weights[index])).astype(
                np.float32
            )
    return masks


def _value(variable: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable), np.float64)


def shrink_attention(layer: keras.layers.MultiHeadAttention) -> tuple[int, list[np.ndarray]]:
    """The heads a pruned MultiHeadAttention keeps and its weights with the others removed.

    A head is removed when its value kernel slice or its output kernel slice
    is all zero; with the value kernel zero, its value bias's constant
    contribution is folded into the output bias (exact: attention weights sum
    to one).

    Returns:
        ``(heads kept, weights in layer.weights order)``; the weights are the
        layer's own when no head is removable. At least one head is kept.
    """
    (query, _), (key, _), (value, _), (output, _) = _projections(layer)
    value_kernel, output_kernel = _value(value.kernel), _value(output.kernel)
    silent = np.all(value_kernel == 0, axis=(0, 2))
    dead = silent | np.all(output_kernel == 0, axis=(1, 2))
    if dead.all():
        dead[int(np.argmax(np.abs(output_kernel).sum(axis=(1, 2))))] = False
    keep = ~dead
    new: dict[int, np.ndarray] = {}
    for dense in (query, key, value):
        new[id(dense.kernel)] = _value(dense.kernel)[:, keep, :]
        if dense.bias is not None:
            new[id(dense.bias)] = _value(dense.bias)[keep, :]
    new[id(output.kernel)] = output_kernel[keep]
    if output.bias is not None:
        bias = _value(output.bias)
        if value.bias is not None:
            folded = dead & silent  # silent heads output their value bias everywhere
            bias = bias + np.einsum("hd,hde->e", _value(value.bias)[folded], output_kernel[folded])
        new[id(output.bias)] = bias
    weights = [
        new.get(id(v), _value(v)).astype(keras.backend.standardize_dtype(v.dtype))
        for v in layer.weights
    ]
    return int(keep.sum()), weights
