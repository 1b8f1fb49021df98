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
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from tfcompress.core.macs import layer_macs, layer_stats
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


def _summarize_layer(name: str, layer: keras.layers.Layer) -> LayerSummary | None:
    if isinstance(layer, keras.layers.InputLayer):
        return None
    stats = layer_stats(layer)
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
