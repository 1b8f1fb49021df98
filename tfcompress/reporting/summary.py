"""``tfcompress.summary``: what a model costs, layer by layer.

For each layer with weights (nested models are walked): its type, parameter
count, bits per weight, sparsity, bytes at that precision and multiply-
accumulates (MACs) per example.

Layers that store weights at a precision other than their variables' dtype
(quantized, binary, clustered layers) report it through an optional method::

    def compression_stats(self) -> dict:
        # any of: "bits_per_weight" (float, for the kernel-like weights),
        #         "params" (int), "macs" (int), "bytes" (float)
        ...

so the summary needs no knowledge of each layer class.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from tfcompress.core.protocols import CompressionStatsLayer
from tfcompress.core.walk import walk_layers
from tfcompress.reporting.table import format_table

__all__ = ["LayerSummary", "ModelSummary", "layer_macs", "summary"]


@dataclasses.dataclass
class LayerSummary:
    """One row of :func:`summary`."""

    name: str
    type: str
    params: int
    bits_per_weight: float | None
    sparsity: float | None
    bytes: float
    macs: int | None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ModelSummary:
    """What :func:`summary` returns: per-layer rows and totals."""

    model_name: str
    layers: list[LayerSummary]

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.layers)

    @property
    def total_bytes(self) -> float:
        return sum(r.bytes for r in self.layers)

    @property
    def total_macs(self) -> int:
        return sum(r.macs or 0 for r in self.layers)

    @property
    def sparsity(self) -> float:
        """Fraction of zeros over the kernel-like weights of all layers."""
        counted = [r for r in self.layers if r.sparsity is not None]
        size = sum(r.params for r in counted)
        return sum(r.sparsity * r.params for r in counted) / size if size else 0.0

    @property
    def bits_per_weight(self) -> float:
        """Average stored bits per parameter."""
        return 8 * self.total_bytes / self.total_params if self.total_params else 0.0

    def __getitem__(self, name: str) -> LayerSummary:
        for row in self.layers:
            if row.name == name:
                return row
        raise KeyError(f"no layer named {name!r} in the summary of {self.model_name!r}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "layers": [r.as_dict() for r in self.layers],
            "total_params": self.total_params,
            "total_bytes": self.total_bytes,
            "total_macs": self.total_macs,
            "sparsity": self.sparsity,
            "bits_per_weight": self.bits_per_weight,
        }

    def to_string(self) -> str:
        headers = ["layer", "type", "params", "bits/w", "sparsity", "bytes", "MACs"]
        rows: list[list[Any]] = [
            [r.name, r.type, r.params, r.bits_per_weight, r.sparsity, round(r.bytes), r.macs]
            for r in self.layers
        ]
        rows.append(
            [
                "total",
                "",
                self.total_params,
                self.bits_per_weight,
                self.sparsity,
                round(self.total_bytes),
                self.total_macs,
            ]
        )
        return format_table(rows, headers, title=f"Model: {self.model_name}")

    def __str__(self) -> str:
        return self.to_string()


def _is_kernel_like(variable: keras.Variable) -> bool:
    # Matrices and convolution/embedding tables; biases, scales and quantizer
    # ranges are 0-D or 1-D.
    return len(variable.shape) >= 2


def _dtype_bits(variable: keras.Variable) -> int:
    return int(np.dtype(keras.backend.standardize_dtype(variable.dtype)).itemsize * 8)


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
    stats = _layer_stats(layer)
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


def _layer_stats(layer: keras.layers.Layer) -> dict[str, Any]:
    return dict(layer.compression_stats()) if isinstance(layer, CompressionStatsLayer) else {}


def _summarize_layer(name: str, layer: keras.layers.Layer) -> LayerSummary | None:
    if isinstance(layer, keras.layers.InputLayer):
        return None
    stats = _layer_stats(layer)
    variables = list(layer.weights)
    params = int(stats.get("params", sum(int(np.prod(v.shape)) for v in variables)))
    kernels = [v for v in variables if _is_kernel_like(v)]
    others = [v for v in variables if not _is_kernel_like(v)]

    if kernels:
        values = [np.asarray(keras.ops.convert_to_numpy(v)) for v in kernels]
        zeros = sum(int(np.count_nonzero(a == 0)) for a in values)
        kernel_size = sum(a.size for a in values)
        sparsity: float | None = zeros / kernel_size
        bits: float | None = float(stats.get("bits_per_weight", _dtype_bits(kernels[0])))
    else:
        kernel_size, sparsity = 0, None
        bits = float(stats["bits_per_weight"]) if "bits_per_weight" in stats else None

    if "bytes" in stats:
        size_bytes = float(stats["bytes"])
    else:
        other_bits = sum(int(np.prod(v.shape)) * _dtype_bits(v) for v in others)
        size_bytes = (kernel_size * (bits or 0) + other_bits) / 8
    return LayerSummary(
        name=name,
        type=type(layer).__name__,
        params=params,
        bits_per_weight=bits,
        sparsity=sparsity,
        bytes=size_bytes,
        macs=layer_macs(layer),
    )


def summary(model: keras.Model, print_fn: Callable[[str], Any] | None = print) -> ModelSummary:
    """Prints and returns a per-layer table of a model's compression state.

    Columns: layer (nested models as ``outer/inner``), type, params, bits per
    weight (of the kernel-like weights, as stored), sparsity (fraction of exact
    zeros in kernel-like weights), bytes at that precision, and MACs per
    example (None when the output shape is unknown). The last row has totals.

    Args:
        model: A built Keras model.
        print_fn: Called with the table text; ``None`` to print nothing.

    Returns:
        A :class:`ModelSummary` with ``layers`` rows and totals
        (``total_params``, ``total_bytes``, ``total_macs``, ``sparsity``,
        ``bits_per_weight``) and ``as_dict()`` for JSON.

    Raises:
        ValueError: If the model has not been built.

    Example:
        >>> model = tfcompress.models.digits_cnn()
        >>> report = tfcompress.summary(model, print_fn=None)
        >>> report["conv1"].macs  # 8x8 outputs x (3x3x1x32) kernel
        18432
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    if not model.built:
        raise ValueError(
            f"model {model.name!r} is not built: call it on data or build it with an input "
            "shape before summarizing it"
        )
    rows = []
    for name, layer in walk_layers(model):
        row = _summarize_layer(name, layer)
        if row is not None:
            rows.append(row)
    result = ModelSummary(model_name=model.name, layers=rows)
    if print_fn is not None:
        print_fn(result.to_string())
    return result
