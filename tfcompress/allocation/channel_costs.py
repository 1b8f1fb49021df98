"""Per-layer latency tables for channel pruning, measured on one-segment LiteRT models.

Removing output channels of a Dense/Conv layer ``l`` makes three things faster:
``l`` itself, the per-channel layers after it (BatchNorm, activations, pooling,
depthwise convolutions, Flatten: its *segment*, the layers ``shrink_model``
shrinks with it), and the input side of the Dense/Conv layers that read them
(its *consumers*). A latency table gives, for each option ``k`` (channels kept)
of each channel-prunable layer, the time of those parts, so that the model's
latency is predicted as ``fixed + sum_l table_l(k_l)``.

What is timed (float32 LiteRT, batch 1, see :mod:`~tfcompress.allocation.latency`):

* ``P_l(i, k)``: the segment of ``l`` alone (``l`` with ``k`` outputs and its
  per-channel followers), fed an input with ``i`` channels;
* ``U_c(k)``: a consumer ``c`` fed ``k`` of ``l``'s channels: ``c`` alone at its
  reference width, or, when ``c`` is channel-prunable itself, its segment
  ``P_c(k, r_c)``.

Every probe's time has the invoke overhead of a one-op model subtracted. The
input and output widths of a layer are coupled (``l``'s outputs are the next
layer's inputs), so a table is measured around a *reference* choice ``r``
(every layer's kept channels; the dense model first): to first order,

    table_l(k) = P_l(i_l(r), k) + sum_{c consumes l} (U_c(k) - U_c(r_l))
    fixed      = T(dense model) - sum_l P_l(dense) - sum_{c not prunable} U_c(dense)
                 + sum_{c not prunable} U_c(r)

which is exact at ``r`` and along every single layer's change from it; what it
misses (two coupled layers changing together) is what a re-measurement around
the solver's choice corrects (:func:`tfcompress.allocation.sparsity.sparsity`
iterates). ``fixed`` (the layers no table covers and the whole model's own
overhead) is clamped at 0 when the sum of the parts exceeds the whole.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from tfcompress.allocation.latency import LatencyCache, Timer, canonical_key, measure
from tfcompress.allocation.latency import overhead_model as _overhead_model
from tfcompress.pruning.channels import consumers_of
from tfcompress.pruning.constraint import strip_mask_configs

__all__ = ["ChannelGraph", "LatencyTables", "latency_tables"]

_DROPPED_CONFIG = ("name", "trainable", "seed")
_DROPPED_SUFFIXES = ("_initializer", "_regularizer", "_constraint")


def _width_field(layer: keras.layers.Layer) -> str:
    return "units" if isinstance(layer, keras.layers.Dense) else "filters"


def _config(layer: keras.layers.Layer, width: int | None = None) -> dict:
    config = copy.deepcopy(layer.get_config())
    strip_mask_configs(config)
    if width is not None:
        config[_width_field(layer)] = int(width)
    return config


def _describe(layer: keras.layers.Layer, width: int | None = None) -> list:
    config = {
        k: v
        for k, v in _config(layer, width).items()
        if k not in _DROPPED_CONFIG and not k.endswith(_DROPPED_SUFFIXES)
    }
    return [type(layer).__name__, config]


def _clone(layer: keras.layers.Layer, width: int | None = None) -> keras.layers.Layer:
    return type(layer).from_config(_config(layer, width))


def _single_node(layer: keras.layers.Layer) -> Any:
    nodes = layer._inbound_nodes
    if len(nodes) != 1:
        raise ValueError(
            f"layer {layer.name!r} is called {len(nodes)} times in the model; channel "
            "allocation needs every pruned layer and the layers after it called once"
        )
    return nodes[0]


@dataclasses.dataclass
class _Region:
    layer: keras.layers.Layer
    channels: int
    followers: list[keras.layers.Layer]
    consumers: list[keras.layers.Layer]  # Dense/Conv layers reading the segment's channels


class ChannelGraph:
    """The channel-prunable layers of a model with their segments and consumers.

    Args:
        model: A built Sequential/Functional model.
        names: The channel-prunable layers (from
            :func:`tfcompress.pruning.channels.channel_prunable_layers`).
    """

    def __init__(self, model: keras.Model, names: Sequence[str]):
        self.model = model
        self.names = list(names)
        consumers = consumers_of(model)
        self.regions: dict[str, _Region] = {}
        self.producer_of: dict[str, str] = {}  # consumer name -> the prunable layer it reads
        for name in self.names:
            layer = model.get_layer(name)
            _single_node(layer)
            followers, found, queue = [], [], [layer]
            while queue:
                current = queue.pop(0)
                for nxt in consumers[current.name]:
                    _single_node(nxt)
                    if type(nxt) in (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D):
                        found.append(nxt)
                    else:
                        followers.append(nxt)
                        queue.append(nxt)
            channels = int(layer.kernel.shape[-1])
            self.regions[name] = _Region(layer, channels, followers, found)
            for consumer in found:
                self.producer_of[consumer.name] = name

    def channels(self, name: str) -> int:
        return self.regions[name].channels

    def positions(self, consumer: keras.layers.Layer) -> int:
        """Input features of ``consumer`` per channel of its producer (> 1 after Flatten)."""
        producer = self.regions[self.producer_of[consumer.name]]
        return int(consumer.input.shape[-1]) // producer.channels

    def input_width(self, layer: keras.layers.Layer, reference: dict[str, int]) -> int:
        """``layer``'s input features when every prunable layer keeps ``reference`` channels."""
        producer = self.producer_of.get(layer.name)
        if producer is None:
            return int(layer.input.shape[-1])
        return self.positions(layer) * reference[producer]

    # --- probe models and their keys
    def segment(self, name: str, width_in: int, kept: int) -> tuple[str, Any]:
        """Key and builder of ``P_name(width_in, kept)``: the layer and its followers."""
        region = self.regions[name]
        layer = region.layer
        shape = (*tuple(layer.input.shape[1:-1]), int(width_in))
        parents = {
            f.name: _single_node(f).input_tensors[0]._keras_history.operation.name
            for f in region.followers
        }
        order = [name] + [f.name for f in region.followers]
        exits = sorted(
            {
                _single_node(c).input_tensors[0]._keras_history.operation.name
                for c in region.consumers
            },
            key=order.index,
        )
        description = {
            "probe": "segment",
            "input": list(shape),
            "layers": [_describe(layer, kept)]
            + [[*_describe(f), order.index(parents[f.name])] for f in region.followers],
            "exits": [order.index(n) for n in exits],
        }

        def build() -> keras.Model:
            inputs = keras.Input(shape)
            tensors = {name: _clone(layer, kept)(inputs)}
            for follower in region.followers:
                tensors[follower.name] = _clone(follower)(tensors[parents[follower.name]])
            outputs = [tensors[n] for n in exits] or [tensors[name]]
            return keras.Model(inputs, outputs, name=f"latency_probe_{name}")

        return "segment-" + canonical_key(description), build

    def consumer(self, consumer: keras.layers.Layer, width_in: int, reference: dict[str, int]):
        """Key and builder of ``U_c``: the consumer fed ``width_in`` features."""
        if consumer.name in self.regions:
            return self.segment(consumer.name, width_in, reference[consumer.name])
        shape = (*tuple(consumer.input.shape[1:-1]), int(width_in))
        description = {"probe": "layer", "input": list(shape), "layers": [_describe(consumer)]}

        def build() -> keras.Model:
            inputs = keras.Input(shape)
            outputs = _clone(consumer)(inputs)
            return keras.Model(inputs, outputs, name=f"latency_probe_{consumer.name}")

        return "layer-" + canonical_key(description), build

    def whole_key(self) -> str:
        """Key of the dense model: its configuration and a digest of its weights.

        The weights count because XNNPACK runs mostly-zero 1x1 convolutions sparse.
        """
        digest = hashlib.sha256()
        for weight in self.model.get_weights():
            digest.update(np.ascontiguousarray(weight).tobytes())
        config = _config_without_masks(self.model)
        return "model-" + canonical_key({"config": config, "weights": digest.hexdigest()})


def _config_without_masks(model: keras.Model) -> Any:
    config = copy.deepcopy(model.get_config())
    for entry in config.get("layers", []):
        strip_mask_configs(entry.get("config", {}))
    return config


@dataclasses.dataclass
class LatencyTables:
    """Latencies (seconds) of every option of every layer around one reference.

    Attributes:
        layers: Layer names.
        kept: Per layer, the channels each option keeps.
        seconds: Per layer, ``table_l(k)`` of each option (see the module notes).
        fixed: What the tables do not cover, at the reference (>= 0).
        dense: The dense model's measured latency.
        overhead: The invoke overhead subtracted from every probe.
        fixed_clamped: Whether ``fixed`` came out negative and was set to 0.
        reference: The kept channels the tables were measured around.
    """

    layers: list[str]
    kept: list[list[int]]
    seconds: list[list[float]]
    fixed: float
    dense: float
    overhead: float
    fixed_clamped: bool
    reference: dict[str, int]

    def predict(self, choices: Sequence[int]) -> float:
        """Predicted model latency (seconds) for option indices ``choices``."""
        return self.fixed + float(sum(s[k] for s, k in zip(self.seconds, choices)))


def latency_tables(
    graph: ChannelGraph,
    kept: dict[str, list[int]],
    reference: dict[str, int],
    timer: Timer,
    cache: LatencyCache | None,
    progress: Any = None,
) -> LatencyTables:
    """Measures (or reads from ``cache``) the tables of ``graph``'s layers around ``reference``.

    Args:
        graph: The model's :class:`ChannelGraph`.
        kept: Per layer, the channel counts it may keep (its options).
        reference: Per layer, the channels kept in the reference choice.
        timer: Seconds per model (:class:`~tfcompress.allocation.latency.LiteRTTimer`).
        cache: The :class:`~tfcompress.allocation.latency.LatencyCache`, or None.
        progress: A ``keras.utils.Progbar`` advanced per probe, or None.

    Returns:
        A :class:`LatencyTables`.
    """
    dense_ref = {name: graph.channels(name) for name in graph.names}
    builders: dict[str, Any] = {"overhead": _overhead_model, graph.whole_key(): lambda: graph.model}
    terms: dict[str, dict] = {}

    def need(entry: tuple[str, Any]) -> str:
        key, build = entry
        builders.setdefault(key, build)
        return key

    non_prunable = []
    for name in graph.names:
        region = graph.regions[name]
        width_in = graph.input_width(region.layer, reference)
        dense_in = graph.input_width(region.layer, dense_ref)
        options = sorted(set(kept[name]) | {reference[name]})
        entry: dict[str, Any] = {
            "own": {k: need(graph.segment(name, width_in, k)) for k in options},
            "dense": need(graph.segment(name, dense_in, region.channels)),
            "consumers": [],
        }
        for consumer in region.consumers:
            per = graph.positions(consumer)
            entry["consumers"].append(
                {k: need(graph.consumer(consumer, per * k, reference)) for k in options}
            )
            if consumer.name not in graph.regions:
                non_prunable.append(
                    (
                        need(graph.consumer(consumer, per * region.channels, dense_ref)),
                        entry["consumers"][-1][reference[name]],
                    )
                )
        terms[name] = entry
    if progress is not None:
        progress.target = (progress.target or 0) + len(builders)
    seconds = measure(builders, timer, cache, progress=progress)
    overhead = seconds["overhead"]

    def value(key: str) -> float:
        return max(0.0, seconds[key] - overhead)

    dense = seconds[graph.whole_key()]
    parts = sum(value(t["dense"]) for t in terms.values()) + sum(value(d) for d, _ in non_prunable)
    fixed = dense - parts
    clamped = fixed < 0
    fixed = max(0.0, fixed) + sum(value(r) for _, r in non_prunable)
    tables = []
    for name in graph.names:
        entry = terms[name]
        ref = reference[name]
        row = []
        for k in kept[name]:
            cost = value(entry["own"][k])
            for consumer in entry["consumers"]:
                cost += value(consumer[k]) - value(consumer[ref])
            row.append(cost)
        tables.append(row)
    return LatencyTables(
        layers=list(graph.names),
        kept=[list(kept[name]) for name in graph.names],
        seconds=tables,
        fixed=fixed,
        dense=dense,
        overhead=overhead,
        fixed_clamped=clamped,
        reference=dict(reference),
    )
