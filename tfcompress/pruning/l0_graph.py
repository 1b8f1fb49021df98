"""Where an L0 gate sits in a model, where its value folds back, and what it costs in MACs.

A gate on the output channels of a Dense/Conv layer ``p`` (the *producer*) is
placed where its value can later be folded into weights exactly:

* ``"bn"``: after a BatchNormalization that directly follows ``p`` (a gate
  before it would be normalized away in training); folds into BN's scale and
  offset;
* ``"producer"``: right after ``p`` when ``p``'s activation is linear or ReLU
  (``relu(z x) = z relu(x)`` for ``z >= 0``); folds into ``p``'s kernel
  columns and bias;
* ``"consumers"``: right after ``p`` (any activation, e.g. GELU) when every
  layer reading ``p`` is a Dense/Conv layer; folds into their input rows.

The model's MACs are multilinear in the gates' kept fractions ``f_g``: a layer
whose output channels a gate ``g`` thins (``p``, its BatchNorm, depthwise
convolutions after it) costs ``MACs_l * f_g``, a Dense/Conv layer reading them
``MACs_l * f_g`` (times ``f_h`` if its own outputs are gated by ``h``):

    MACs(f) = sum_l MACs_l * prod_{g in gates(l)} f_g

with ``MACs_l`` as :func:`tfcompress.core.macs.layer_macs` counts them (what
``tfc.summary`` shows), so the fraction reached is the one ``tfc.summary``
reports after ``shrink_model``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from tfcompress.core.macs import layer_macs
from tfcompress.core.walk import walk_layers
from tfcompress.pruning.channels import consumers_of, plain_channel_layer
from tfcompress.pruning.hard_concrete import HardConcreteGate
from tfcompress.pruning.l0_heads import GatedMultiHeadAttention
from tfcompress.pruning.shrink import PER_CHANNEL_LAYERS
from tfcompress.pruning.validation import check_positive

__all__ = ["GateCosts", "GateSite", "gate_site", "gated_costs", "validate_target_macs"]

_HOMOGENEOUS = ("linear", "relu")
_PASS_THROUGH = (
    *PER_CHANNEL_LAYERS,
    keras.layers.Flatten,
    keras.layers.DepthwiseConv2D,
)  # act(z x) = z act(x) for z >= 0


def validate_target_macs(value: Any, name: str = "target_macs") -> float:
    """A MACs budget: a fraction of the dense model's MACs in (0, 1]."""
    return check_positive(name, value, upper=1.0)


@dataclasses.dataclass(frozen=True)
class GateSite:
    """Where the gate of ``producer`` goes: after ``after`` (a layer name); how it folds."""

    producer: str
    after: str
    fold: str  # "bn" | "producer" | "consumers"
    channels: int


def gate_site(model: keras.Model, producer: str) -> GateSite | str:
    """The :class:`GateSite` of ``producer``, or why it cannot be gated (a string)."""
    layer = model.get_layer(producer)
    if not plain_channel_layer(layer):
        return f"{type(layer).__name__} is not a Dense/Conv1D/Conv2D layer without groups"
    channels = int(layer.kernel.shape[-1])
    readers = consumers_of(model)[producer]
    if len(readers) == 1 and isinstance(readers[0], keras.layers.BatchNormalization):
        norm = readers[0]
        rank = len(norm.input.shape)
        if norm.scale and norm.center and norm.axis in (-1, rank - 1):
            return GateSite(producer, norm.name, "bn", channels)
    activation = getattr(getattr(layer, "activation", None), "__name__", "linear")
    if activation in _HOMOGENEOUS:
        return GateSite(producer, producer, "producer", channels)
    if readers and all(plain_channel_layer(r) for r in readers):
        return GateSite(producer, producer, "consumers", channels)
    return (
        f"its activation {activation!r} is not linear or ReLU, no BatchNormalization follows "
        "it, and not every layer reading it is a Dense/Conv layer: a gate there could not be "
        "folded into weights"
    )


def gate_producer(model: keras.Model, gate: HardConcreteGate) -> tuple[str, str | None]:
    """``(producer name, BatchNorm name or None)`` of a gate in a gated model."""
    before = gate._inbound_nodes[0].input_tensors[0]._keras_history.operation
    if isinstance(before, keras.layers.BatchNormalization):
        producer = before._inbound_nodes[0].input_tensors[0]._keras_history.operation
        return producer.name, before.name
    return before.name, None


def find_gates(model: keras.Model) -> list[HardConcreteGate]:
    """The channel gates (layers) and head gates (inside attention layers), in model order."""
    found = []
    for _, layer in walk_layers(model):
        if isinstance(layer, HardConcreteGate):
            found.append(layer)
        elif isinstance(layer, GatedMultiHeadAttention):
            found.append(layer.head_gate)
    return found


def head_owner(model: keras.Model, gate: HardConcreteGate) -> Any:
    """The GatedMultiHeadAttention whose heads ``gate`` gates, or None for a channel gate."""
    for _, layer in walk_layers(model):
        if isinstance(layer, GatedMultiHeadAttention) and layer.head_gate is gate:
            return layer
    return None


class GateCosts:
    """The model's MACs as a multilinear function of the gates' kept fractions.

    Args:
        model: A gated model (from :func:`tfcompress.pruning.l0.add_l0_gates`).
        gates: Its gates, in the order of the fractions passed to the methods.
    """

    def __init__(self, model: keras.Model, gates: list[HardConcreteGate]):
        readers = consumers_of(model)
        out_gate: dict[str, int] = {}
        in_gate: dict[str, int] = {}
        self.producers: list[str] = []
        for index, gate in enumerate(gates):
            owner = head_owner(model, gate)
            if owner is not None:  # every MACs term of attention scales with its heads
                self.producers.append(owner.name)
                out_gate[owner.name] = index
                continue
            producer, norm = gate_producer(model, gate)
            self.producers.append(producer)
            out_gate[producer] = index
            if norm is not None:
                out_gate[norm] = index
            queue, seen = list(readers[gate.name]), set()
            while queue:
                layer = queue.pop(0)
                if layer.name in seen:
                    continue
                seen.add(layer.name)
                if plain_channel_layer(layer):
                    in_gate[layer.name] = index
                    continue
                out_gate[layer.name] = index  # per-channel: depthwise, pooling, Flatten
                if isinstance(layer, _PASS_THROUGH):
                    queue.extend(readers[layer.name])
        self.channels = np.array([int(g.gate_logit.shape[0]) for g in gates], np.float64)
        self.terms: list[tuple[float, tuple[int, ...]]] = []
        self.dense = 0.0
        for _, layer in walk_layers(model):
            macs = float(layer_macs(layer) or 0)
            self.dense += macs
            gates_of = tuple(sorted({out_gate.get(layer.name), in_gate.get(layer.name)} - {None}))
            if macs:
                self.terms.append((macs, gates_of))
        if self.dense <= 0:
            raise ValueError(f"model {model.name!r} has no layer with known MACs")

    def fraction(self, kept: np.ndarray) -> float:
        """MACs at kept fractions ``kept`` (one per gate) / dense MACs."""
        total = sum(macs * float(np.prod([kept[g] for g in gates])) for macs, gates in self.terms)
        return total / self.dense

    def gradient(self, kept: np.ndarray) -> np.ndarray:
        """d fraction / d kept fraction of each gate."""
        grad = np.zeros(len(self.channels))
        for macs, gates in self.terms:
            for g in gates:
                grad[g] += macs * float(np.prod([kept[h] for h in gates if h != g]))
        return grad / self.dense

    def minimum_fraction(self) -> float:
        """The fraction left when every gated layer keeps one channel."""
        return self.fraction(1.0 / self.channels)


def gated_costs(
    model: keras.Model, target_macs: float | None, owner: str
) -> tuple[list[HardConcreteGate], GateCosts]:
    """The gates of ``model`` and their costs; refuses no gates or an unreachable target."""
    gates = find_gates(model)
    if not gates:
        raise ValueError(
            f"{owner}: model {model.name!r} has no HardConcreteGate; use the model "
            "tfc.pruning.add_l0_gates(model) returns"
        )
    costs = GateCosts(model, gates)
    if target_macs is not None and target_macs < costs.minimum_fraction():
        raise ValueError(
            f"{owner}: target_macs={target_macs} is below {costs.minimum_fraction():.3f}, the "
            "MACs fraction left when every gated layer keeps a single channel"
        )
    return gates, costs
