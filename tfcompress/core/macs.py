"""Multiply-accumulates (MACs) per example of a built Keras layer.

One count, used by ``tfc.summary`` (its MACs column) and by the pruning methods
whose cost is MACs (L0 gates under a MACs constraint). A layer may report its
own count through ``compression_stats()["macs"]``
(:class:`tfcompress.core.protocols.CompressionStatsLayer`).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from tfcompress.core.protocols import CompressionStatsLayer

__all__ = ["layer_macs", "layer_stats"]


def layer_stats(layer: keras.layers.Layer) -> dict[str, Any]:
    """The layer's own ``compression_stats()`` (params, bits, MACs), or ``{}``."""
    return dict(layer.compression_stats()) if isinstance(layer, CompressionStatsLayer) else {}


def _shape(tensor_or_shape: Any) -> tuple[int | None, ...] | None:
    shape = getattr(tensor_or_shape, "shape", tensor_or_shape)
    try:
        return tuple(shape)
    except TypeError:
        return None


def _spatial_product(shape: tuple[int | None, ...] | None, data_format: str) -> int | None:
    if shape is None:
        return None
    dims = shape[1:-1] if data_format == "channels_last" else shape[2:]
    if any(d is None for d in dims):
        return None
    return math.prod(dims)


def layer_macs(layer: keras.layers.Layer) -> int | None:
    """Multiply-accumulates per example of a built layer, or None when unknown."""
    stats = layer_stats(layer)
    if "macs" in stats:
        return int(stats["macs"])
    try:
        output_shape = _shape(layer.output)
        input_shape = _shape(layer.input)
    except (AttributeError, ValueError):
        return None
    layers = keras.layers
    if isinstance(layer, layers.Embedding):
        return 0
    if isinstance(layer, (layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose)):
        spatial = _spatial_product(input_shape, layer.data_format)
        return None if spatial is None else spatial * int(np.prod(layer.kernel.shape))
    if isinstance(layer, layers.SeparableConv2D | layers.SeparableConv1D):
        spatial = _spatial_product(output_shape, layer.data_format)
        if spatial is None:
            return None
        size = int(np.prod(layer.depthwise_kernel.shape) + np.prod(layer.pointwise_kernel.shape))
        return spatial * size
    if isinstance(layer, (layers.Conv1D, layers.Conv2D, layers.Conv3D, layers.DepthwiseConv2D)):
        spatial = _spatial_product(output_shape, layer.data_format)
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            kernel = layer.depthwise_kernel
        return None if spatial is None else spatial * int(np.prod(kernel.shape))
    if isinstance(layer, layers.MultiHeadAttention):
        return _attention_macs(layer)
    per_row = getattr(layer, "macs_per_row", None)  # layers acting on the last axis only
    if callable(per_row):
        if output_shape is None or any(d is None for d in output_shape[1:-1]):
            return None
        return int(per_row()) * math.prod(output_shape[1:-1])
    if isinstance(layer, (layers.Dense, layers.EinsumDense)):
        if output_shape is None or any(d is None for d in output_shape[1:]):
            return None
        kernel_size = int(np.prod(layer.kernel.shape))
        if isinstance(layer, layers.Dense):
            return kernel_size * math.prod(output_shape[1:-1])
        # EinsumDense: every output element sums over the kernel's contracted
        # axes, i.e. kernel_size / (product of the kernel's free output axes).
        return round(kernel_size * math.prod(output_shape[1:]) / max(1, _einsum_free(layer)))
    if isinstance(layer, (layers.LSTM, layers.GRU, layers.SimpleRNN)):
        steps = input_shape[1] if input_shape else None
        if steps is None:
            return None
        cell = layer.cell
        return steps * int(np.prod(cell.kernel.shape) + np.prod(cell.recurrent_kernel.shape))
    return None


def _attention_macs(layer: keras.layers.MultiHeadAttention) -> int | None:
    """The four projections per position, plus scores (QK^T) and the weighted sum of values.

    ``Lq * |Wq| + Lk * |Wk| + Lv * |Wv| + Lq * |Wo| + heads * Lq * Lk * (key_dim + value_dim)``
    for sequences of lengths ``Lq`` (query) and ``Lk = Lv`` (key/value), from the layer's
    first call in the model; None when a length is unknown.
    """
    nodes = getattr(layer, "_inbound_nodes", [])
    if not nodes:
        return None
    arguments = nodes[0].arguments
    args, kwargs = list(arguments.args), dict(arguments.kwargs)
    query = args[0] if args else kwargs.get("query")
    value = args[1] if len(args) > 1 else kwargs.get("value")
    key = args[2] if len(args) > 2 else kwargs.get("key")
    key = value if key is None else key

    def length(tensor: Any) -> int | None:
        shape = getattr(tensor, "shape", None)
        if shape is None or any(d is None for d in shape[1:-1]):
            return None
        return math.prod(shape[1:-1])

    lq, lk, lv = length(query), length(key), length(value)
    if None in (lq, lk, lv):
        return None
    sizes = [
        int(np.prod(getattr(layer, name).kernel.shape))
        for name in ("_query_dense", "_key_dense", "_value_dense", "_output_dense")
    ]
    value_dim = layer._value_dim or layer._key_dim
    heads, key_dim = layer.num_heads, layer._key_dim
    scores_and_sum = heads * lq * lk * (key_dim + value_dim)
    return lq * sizes[0] + lk * sizes[1] + lv * sizes[2] + lq * sizes[3] + scores_and_sum


def _einsum_free(layer: keras.layers.EinsumDense) -> int:
    inputs, rest = layer.equation.split(",")
    kernel, output = rest.split("->")
    free = [i for i, c in enumerate(kernel) if c in output and c not in inputs]
    return math.prod(layer.kernel.shape[i] for i in free) if free else 1
