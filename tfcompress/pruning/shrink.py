"""``shrink_model``: turn channel-pruned layers into physically smaller dense layers.

A pruned output channel (all-zero kernel slice and zero bias, as channel
pruning leaves it) carries a known constant: ``activation(0)``, transformed by
the per-channel layers after it (BatchNormalization, activations, pooling).
The channel is removed from its producer, from every per-channel layer on its
path, and from the inputs of the Dense/Conv layers that read it, whose bias
absorbs the constant's contribution, so the outputs stay the same.

Attention heads pruned with ``granularity="head"`` (value or output projection
slice all zero) leave ``MultiHeadAttention`` with a smaller ``num_heads``
(:func:`tfcompress.pruning.heads.shrink_attention`); FFN neurons are Dense
channels like any other.

Depthwise convolutions (depth multiplier 1) are per-channel layers: a
removed channel goes with its depthwise kernel slice and bias, as in
MobileNetV2's inverted residual blocks, where channel pruning (which also
masks the BatchNorm and depthwise channels after a pruned filter) leaves the
channel exactly zero up to the projection.

A channel is kept when removing it would change an output: it reaches a model
output or a layer that mixes channels in unknown ways (Reshape, LayerNorm,
grouped convolutions, depth multipliers above 1, ...); it is a non-zero constant entering a
``"same"``/``"causal"``-padded convolution (its border sees padding zeros) or
a layer without bias; or, across an ``Add``/``Multiply``/..., it is alive in
any input (channels stay aligned across a residual add).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from tfcompress.pruning.constraint import attach_mask, constraint_attribute, strip_mask_configs
from tfcompress.pruning.heads import shrink_attention

__all__ = ["shrink_model"]

_PRODUCERS = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
#: Layers that keep channels apart (a removed channel passes through them).
PER_CHANNEL_LAYERS = (
    keras.layers.BatchNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
    keras.layers.UpSampling1D,
    keras.layers.UpSampling2D,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
)
_MERGES = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Multiply,
)


def _depthwise(layer: keras.layers.Layer) -> bool:
    """A depthwise convolution that keeps channel c in channel c."""
    return isinstance(layer, keras.layers.DepthwiseConv2D) and layer.depth_multiplier == 1


@dataclasses.dataclass
class _Tensor:
    channels: int
    positions: int  # >1 after Flatten: feature index = position * channels + channel
    const: np.ndarray  # per channel: the constant it carries, NaN when alive


@dataclasses.dataclass
class _Node:
    layer: keras.layers.Layer
    inputs: list[int]
    output: int


class _Channels:
    """Union-find over (tensor, channel): channels that must go or stay together."""

    def __init__(self) -> None:
        self.parent: dict[tuple[int, int], tuple[int, int]] = {}
        self.blocked: set[tuple[int, int]] = set()

    def find(self, key: tuple[int, int]) -> tuple[int, int]:
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, a: tuple[int, int], b: tuple[int, int]) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb

    def block(self, key: tuple[int, int]) -> None:
        self.blocked.add(key)

    def removable(self, key: tuple[int, int]) -> bool:
        return self.find(key) not in self._blocked_roots

    def freeze(self) -> None:
        self._blocked_roots = {self.find(k) for k in self.blocked}


def _graph(model: keras.Model) -> tuple[list[_Node], dict[int, Any], list[int], list[int]]:
    functional = model if not isinstance(model, keras.Sequential) else model._functional
    if functional is None or not hasattr(functional, "outputs"):
        raise ValueError(
            f"shrink_model needs a Sequential or Functional model with defined inputs; "
            f"{model.name!r} has none (start it with keras.Input)"
        )
    tensors: dict[int, Any] = {}
    nodes: list[_Node] = []
    seen: set[int] = set()

    def visit(tensor: Any) -> None:
        key = id(tensor)
        tensors[key] = tensor
        if key in seen:
            return
        seen.add(key)
        operation, node_index, _ = tensor._keras_history
        if isinstance(operation, keras.layers.InputLayer):
            return
        node = operation._inbound_nodes[node_index]
        inputs = list(node.input_tensors)
        for parent in inputs:
            visit(parent)
        if isinstance(operation, keras.Model):
            raise ValueError(
                f"shrink_model does not descend into nested model {operation.name!r}; "
                "shrink it separately or build the model flat"
            )
        if len(node.outputs) != 1:
            raise ValueError(f"layer {operation.name!r} has several outputs; not supported")
        nodes.append(_Node(operation, [id(t) for t in inputs], key))

    outputs = keras.tree.flatten(functional.outputs)
    for output in outputs:
        visit(output)
    inputs = [id(t) for t in keras.tree.flatten(functional.inputs)]
    return nodes, tensors, inputs, [id(t) for t in outputs]


def _values(layer: keras.layers.Layer) -> dict[str, np.ndarray]:
    return {v.name: np.asarray(keras.ops.convert_to_numpy(v)) for v in layer.weights}


def _call_on_constant(
    layer: keras.layers.Layer, shapes: list[tuple], inputs: list[_Tensor]
) -> np.ndarray:
    """Per-channel output of a per-channel layer fed constant channels (NaN: alive)."""
    arrays = []
    # One spatial size for every input: a merge may see one input's length as
    # known and another's (e.g. attention's output) as None.
    spatial = tuple(
        max((int(d) for d in dims if d is not None), default=8)
        for dims in zip(*(shape[1:-1] for shape in shapes))
    )
    for t in inputs:
        filled = np.nan_to_num(t.const, nan=0.0).astype(np.float32)
        arrays.append(np.broadcast_to(filled, (1, *spatial, t.channels)).copy())
    result = layer(arrays if len(arrays) > 1 else arrays[0], training=False)
    out = np.asarray(keras.ops.convert_to_numpy(result), np.float64)
    out = out.reshape(-1, out.shape[-1])
    alive = np.zeros(out.shape[-1], bool)
    for t in inputs:
        alive |= np.isnan(t.const)
    # A constant input gives a constant output only if it is the same everywhere.
    varies = np.ptp(out, axis=0) > 0
    return np.where(alive | varies, np.nan, out[0])


def shrink_model(model: keras.Model) -> keras.Model:
    """Returns a smaller dense copy of a channel-pruned model with the same outputs.

    Output channels whose kernel slice and bias are all zero (what
    ``GradualPruning(granularity="channel")`` leaves) are removed from Dense
    and Conv1D/2D/3D layers, together with the matching channels of the
    BatchNormalization, activation, padding, pooling and depthwise
    convolution layers after them and the
    matching inputs of the next Dense/Conv (after a Flatten too); the
    constant a removed channel carried is folded into the next bias, so the
    outputs equal the pruned model's within float rounding. Channels are kept
    consistent across residual adds. Channels whose removal would change the
    outputs are kept (see the module notes). The copy is not compiled.

    Args:
        model: A built Sequential or Functional model, channels-last.

    Returns:
        A new model with fewer filters/units and the original's weights.

    Raises:
        ValueError: If the model is not a built Sequential/Functional model,
            contains a nested model, or uses channels_first.

    Example:
        >>> pruning = tfc.callbacks.GradualPruning(0.5, granularity="channel", ...)
        >>> model.fit(x, y, callbacks=[pruning])
        >>> small = tfc.shrink_model(model)
        >>> small.count_params() < model.count_params()
        True
    """
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(f"model must be a built keras.Model, got {model!r}")
    for layer in model.layers:
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise ValueError(
                f"layer {layer.name!r} uses data_format={layer.data_format!r}; shrink_model "
                "supports channels_last only"
            )
    nodes, keras_tensors, input_ids, output_ids = _graph(model)
    info: dict[int, _Tensor] = {}
    for key in input_ids:
        channels = int(keras_tensors[key].shape[-1])
        info[key] = _Tensor(channels, 1, np.full(channels, np.nan))
    groups = _Channels()

    def block_all(key: int) -> None:
        for c in range(info[key].channels):
            groups.block((key, c))

    for node in nodes:
        layer, out = node.layer, node.output
        shape = tuple(keras_tensors[out].shape)
        channels = int(shape[-1]) if len(shape) > 1 else 1
        ins = [info[k] for k in node.inputs]
        if isinstance(layer, _PRODUCERS) and getattr(layer, "groups", 1) == 1:
            values = _values(layer)
            kernel = values["kernel"]
            bias = values.get("bias")
            dead = np.all(kernel.reshape(-1, kernel.shape[-1]) == 0, axis=0)
            if bias is not None:
                dead &= bias == 0
            zero_out = np.asarray(
                keras.ops.convert_to_numpy(layer.activation(np.zeros((1, channels), "float32")))
            )[0]
            info[out] = _Tensor(channels, 1, np.where(dead, zero_out, np.nan))
            # What this layer can absorb of its input's removed channels.
            source = ins[0]
            padding = getattr(layer, "padding", "valid")
            for c in range(source.channels):
                k = source.const[c]
                exact_fold = not np.isnan(k) and (
                    k == 0
                    or (
                        bias is not None
                        and (isinstance(layer, keras.layers.Dense) or padding == "valid")
                    )
                )
                if not exact_fold:
                    groups.block((node.inputs[0], c))
            if source.positions > 1 and not isinstance(layer, keras.layers.Dense):
                block_all(node.inputs[0])
        elif isinstance(layer, keras.layers.Flatten):
            source = ins[0]
            in_shape = tuple(keras_tensors[node.inputs[0]].shape)
            positions = int(np.prod(in_shape[1:-1])) * source.positions if len(in_shape) > 2 else 1
            info[out] = _Tensor(source.channels, positions, source.const.copy())
            for c in range(source.channels):
                groups.union((node.inputs[0], c), (out, c))
        elif (isinstance(layer, PER_CHANNEL_LAYERS + _MERGES) or _depthwise(layer)) and all(
            t.channels == channels and t.positions == 1 for t in ins
        ):
            in_shapes = [tuple(keras_tensors[k].shape) for k in node.inputs]
            const = _call_on_constant(layer, in_shapes, ins)
            info[out] = _Tensor(channels, 1, const)
            for key in node.inputs:
                for c in range(channels):
                    groups.union((key, c), (out, c))
        elif isinstance(layer, keras.layers.Concatenate) and layer.axis in (-1, len(shape) - 1):
            const = np.concatenate([t.const for t in ins])
            info[out] = _Tensor(channels, 1, const)
            offset = 0
            for key, t in zip(node.inputs, ins):
                for c in range(t.channels):
                    groups.union((key, c), (out, offset + c))
                offset += t.channels
        else:
            # Unknown channel mixing: every input channel stays.
            for key in node.inputs:
                block_all(key)
            info[out] = _Tensor(channels, 1, np.full(channels, np.nan))
    for key in output_ids:
        block_all(key)
    for key, t in info.items():
        for c in range(t.channels):
            if np.isnan(t.const[c]):
                groups.block((key, c))
    groups.freeze()

    # Every producer keeps at least one channel.
    for node in nodes:
        if isinstance(node.layer, _PRODUCERS) and node.output in info:
            t = info[node.output]
            if all(groups.removable((node.output, c)) for c in range(t.channels)):
                groups._blocked_roots.add(groups.find((node.output, 0)))

    def kept(key: int) -> np.ndarray:
        return np.array([not groups.removable((key, c)) for c in range(info[key].channels)])

    config = model.get_config()
    weights: dict[str, list[np.ndarray] | dict[str, np.ndarray]] = {}
    sizes: dict[str, tuple[str, int]] = {}
    for node in nodes:
        layer = node.layer
        if isinstance(layer, _PRODUCERS) and getattr(layer, "groups", 1) == 1:
            values = _values(layer)
            kernel = values["kernel"].astype(np.float64)
            bias = values.get("bias")
            bias = None if bias is None else bias.astype(np.float64)
            source = info[node.inputs[0]]
            keep_in = kept(node.inputs[0])
            removed = ~keep_in
            if removed.any():
                fold = np.nan_to_num(source.const, nan=0.0) * removed
                if source.positions > 1:
                    rows = kernel.reshape(source.positions, source.channels, -1)
                    if bias is not None:
                        bias = bias + np.einsum("c,pco->o", fold, rows)
                    kernel = rows[:, keep_in, :].reshape(-1, kernel.shape[-1])
                else:
                    if bias is not None:
                        spatial = kernel.reshape(-1, source.channels, kernel.shape[-1]).sum(0)
                        bias = bias + fold @ spatial
                    kernel = kernel[..., keep_in, :]
            keep_out = kept(node.output)
            kernel = kernel[..., keep_out]
            new = {"kernel": kernel}
            if bias is not None:
                new["bias"] = bias[keep_out]
            weights[layer.name] = new
            field = "units" if isinstance(layer, keras.layers.Dense) else "filters"
            sizes[layer.name] = (field, int(keep_out.sum()))
        elif isinstance(layer, keras.layers.BatchNormalization):
            keep = kept(node.output)
            weights[layer.name] = {k: v[keep] for k, v in _values(layer).items()}
        elif _depthwise(layer):
            keep = kept(node.output)
            weights[layer.name] = {
                k: v[..., keep, :] if v.ndim > 1 else v[keep] for k, v in _values(layer).items()
            }
        elif isinstance(layer, keras.layers.MultiHeadAttention):
            heads, values = shrink_attention(layer)  # pruned heads out (pruning.heads)
            weights[layer.name] = values
            if heads < layer.num_heads:
                sizes[layer.name] = ("num_heads", heads)
        elif layer.weights:
            # In order, not by name: sublayers' variables share names (attention's kernels).
            weights[layer.name] = [np.asarray(keras.ops.convert_to_numpy(v)) for v in layer.weights]

    masked: dict[str, list[str]] = {}
    for entry in config["layers"]:
        # Input shapes change: let the rebuilt graph infer them.
        entry.pop("build_config", None)
        name = entry["config"].get("name")
        # Masks have the old shapes: rebuilt below from the shrunk weights' zeros.
        masked[name] = strip_mask_configs(entry["config"])
        if name in sizes:
            field, size = sizes[name]
            entry["config"][field] = size
    small = model.__class__.from_config(config)
    for layer in small.layers:
        if layer.name in weights:
            values = weights[layer.name]
            if isinstance(values, list):
                layer.set_weights(values)
                continue
            layer.set_weights(
                [
                    np.asarray(values[v.name], keras.backend.standardize_dtype(v.dtype))
                    for v in layer.weights
                ]
            )
    for layer in small.layers:
        for variable in layer.weights:
            if constraint_attribute(layer, variable) in masked.get(layer.name, ()):
                mask = np.asarray(keras.ops.convert_to_numpy(variable)) != 0
                attach_mask(small, layer, variable).mask.assign(mask.astype(np.float32))
    return small
