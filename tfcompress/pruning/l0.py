"""Channel pruning by learned L0 gates under a MACs constraint, without a penalty weight to tune.

Three steps::

    gated = tfc.pruning.add_l0_gates(model)              # a HardConcreteGate per channel layer
    gated.compile(...)
    gated.fit(x, y, callbacks=[tfc.callbacks.L0MacsConstraint(target_macs=0.5)])
    pruned, report = tfc.pruning.remove_l0_gates(gated, target_macs=0.5, batchnorm_data=x)
    small = tfc.shrink_model(pruned)                      # 0.5x the MACs, for real

:func:`add_l0_gates` copies the model with a hard-concrete gate (Louizos et al.
2018, :class:`~tfcompress.pruning.hard_concrete.HardConcreteGate`) on the
output channels of every layer ``shrink_model`` can remove channels from.
:class:`L0MacsConstraint` trains the gates with the task under the constraint
``E[MACs(z)] / MACs(dense) <= target`` by a Lagrangian (Gallego-Posada et al.,
"Controlled Sparsity via Constrained Optimization", NeurIPS 2022): the model
minimizes ``loss + lambda * (E[MACs] / MACs_dense - target)`` while the
multiplier ``lambda >= 0`` follows the violation ``v = E[MACs] / MACs_dense -
target`` after every step, as a proportional-integral controller (nuPI,
Sohrabi et al., ICML 2024; plain dual ascent is the integral part alone):

    I      <- max(0, I + multiplier_rate * v)
    lambda <- max(0, I + proportional * v)

so it grows until the constraint holds and shrinks when it is slack: no
penalty weight to tune per model. The proportional part damps the overshoot
that dual ascent alone shows under Adam (digits CNN, target 0.5, 90 steps:
0.27x the expected MACs at the end with ``proportional=0``, 0.48x with 50). The target the multiplier sees descends
linearly from 1 to ``target_macs`` over the first ``ramp`` of the fit: a gate
that reaches ``z = 0`` in every draw gets no gradient again, so the gates must
not overshoot, and with the whole budget demanded at step 0 the multiplier
winds up and Adam's momentum carries the gates far below it (measured on the
digits CNN at 0.5: 0.15x the MACs after 90 steps without the ramp). ``E[MACs]`` is multilinear in each gate's
expected kept fraction ``mean_c P(z_c != 0)``
(:class:`~tfcompress.pruning.l0_graph.GateCosts`); its gradient reaches the
gates through each gate's ``cost_weight * mean_c P(z_c != 0)`` loss, with
``cost_weight = lambda * d(E[MACs] / MACs_dense) / d f_g`` set by the callback
before every step (exact: the cost is linear in each gate's fraction).

:func:`remove_l0_gates` turns the inference gates into weights: a channel with
``z_c = 0`` is masked to exactly zero (kernel column, bias, the BatchNorm and
depthwise channels after it, as channel pruning leaves it, with
:class:`~tfcompress.pruning.constraint.PruningMask` so fine-tuning keeps it
so), a kept channel's ``z_c`` is folded into the weights (see
:mod:`~tfcompress.pruning.l0_graph`). With ``target_macs`` the kept set is
then rounded to the target: channels are dropped lowest ``log_alpha`` first
until the MACs are at most the target, or added back highest first while they
stay at most the target; the report says how many channels the rounding moved
and the fraction the gates alone gave.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from tfcompress.core.backend_state import sync_state
from tfcompress.core.batchnorm import reestimate_batchnorm
from tfcompress.core.calibration import calibration_data
from tfcompress.core.rewrite import layer_selector, rewrite_model
from tfcompress.pruning.channels import channel_prunable_layers, consumers_of
from tfcompress.pruning.constraint import attach_mask
from tfcompress.pruning.hard_concrete import HardConcreteGate
from tfcompress.pruning.l0_graph import (
    GateCosts,
    gate_producer,
    gate_site,
    gated_costs,
    head_owner,
    validate_target_macs,
)
from tfcompress.pruning.l0_heads import (
    GatedMultiHeadAttention,
    fold_heads,
    gated_attention,
    head_variables,
    plain_attention,
)
from tfcompress.pruning.masking import channel_followers, owner_of
from tfcompress.pruning.prunable import PrunableWeight

__all__ = ["L0Report", "add_l0_gates", "remove_l0_gates"]

GATE_SUFFIX = "_l0_gate"


def _check_graph(model: Any, argument: str = "model") -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(f"{argument} must be a keras.Model, got {type(model).__name__}")
    if not model.built:
        raise ValueError(f"{argument} {model.name!r} is not built")


def add_l0_gates(
    model: keras.Model,
    layers: Any = None,
    *,
    initial_log_alpha: float = 3.0,
    temperature: float = 2.0 / 3.0,
    rate: float = 100.0,
    seed: int = 0,
) -> keras.Model:
    """A copy of ``model`` with L0 gates on channels and attention heads.

    Each selected Dense/Conv layer gets a :class:`HardConcreteGate` on its output
    channels; each selected ``keras.layers.MultiHeadAttention`` becomes a
    :class:`~tfcompress.pruning.l0_heads.GatedMultiHeadAttention` (a gate per head).

    Args:
        model: A built Sequential or Functional model (the gated layers at its top level).
        layers: Which layers: None (every layer whose channels ``shrink_model``
            can remove and whose gate folds into weights, and every
            MultiHeadAttention), or a selection (names, classes, a predicate)
            among those.
        initial_log_alpha, temperature, rate: The gates' settings (see
            :class:`HardConcreteGate`).
        seed: The first gate's noise seed (the next gates count up from it).

    Returns:
        The gated copy (the user's model is not modified); a channel gate is
        named ``<layer>_l0_gate``, an attention layer keeps its name.

    Raises:
        ValueError: If a selected layer cannot be gated (named, with why), or no
            layer can.

    Example:
        >>> gated = add_l0_gates(model)
        >>> [layer.name for layer in gated.layers if "l0_gate" in layer.name]
        ['conv1_l0_gate', 'conv2_l0_gate']
    """
    _check_graph(model)
    try:
        candidates = channel_prunable_layers(model)
    except ValueError:
        candidates = []
    attention = [
        layer.name
        for layer in model.layers
        if isinstance(layer, keras.layers.MultiHeadAttention)
        and not isinstance(layer, GatedMultiHeadAttention)
    ]
    if layers is None:
        names = candidates + attention
    else:
        chosen = layer_selector(layers)
        names = [layer.name for layer in model.layers if chosen(layer)]
        if not names:
            raise ValueError(f"layers={layers!r} selects no layer of model {model.name!r}")
        for name in names:
            if name not in candidates and name not in attention:
                raise ValueError(
                    f"layers={layers!r} selects {name!r}, whose output channels shrink_model "
                    f"cannot remove (they reach an output, a merge or a layer mixing channels) "
                    f"and which is no MultiHeadAttention; gateable layers: "
                    f"{candidates + attention}"
                )
    sites, refused, heads = {}, {}, [n for n in names if n in attention]
    for name in names:
        if name in heads:
            continue
        site = gate_site(model, name)
        if isinstance(site, str):
            refused[name] = site
        else:
            sites[site.after] = site
    if refused and layers is not None:
        name, why = next(iter(refused.items()))
        raise ValueError(f"layers={layers!r}: {name!r} cannot be gated: {why}")
    if not sites and not heads:
        raise ValueError(
            f"model {model.name!r} has no layer an L0 gate can prune (no Dense/Conv layer whose "
            f"output channels shrink_model could remove, no MultiHeadAttention): {refused}"
        )
    settings = {"initial_log_alpha": initial_log_alpha, "temperature": temperature, "rate": rate}
    HardConcreteGate(**settings)  # bad settings raise here, before anything is built
    order = {name: i for i, name in enumerate([*sites, *heads])}

    def replace(layer: keras.layers.Layer) -> Any:
        if layer.name not in heads:
            return None
        return gated_attention(layer, {**settings, "seed": seed + order[layer.name]})

    def call(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        outputs = layer(*args, **kwargs)
        site = sites.get(layer.name)
        if site is None:
            return outputs
        gate = HardConcreteGate(
            **settings, seed=seed + order[layer.name], name=site.producer + GATE_SUFFIX
        )
        return gate(outputs)

    gated, _ = rewrite_model(model, replace, call_function=call)
    return gated


@dataclasses.dataclass
class L0Report:
    """What :func:`remove_l0_gates` kept.

    Attributes:
        kept: ``{layer: (channels kept, channels)}``.
        gates_macs_fraction: MACs / dense MACs of the inference gates alone.
        macs_fraction: MACs / dense MACs of the returned model (after rounding).
        rounded_channels: Channels the rounding to ``target_macs`` turned off or on.
    """

    kept: dict[str, tuple[int, int]]
    gates_macs_fraction: float
    macs_fraction: float
    rounded_channels: int


def _round_to_target(
    keep: list[np.ndarray], scores: list[np.ndarray], costs: GateCosts, target: float
) -> int:
    """Drops (adds) channels lowest (highest) score first until MACs <= target, tightly."""
    counts = np.array([k.sum() for k in keep], np.float64)
    flat = [(float(s), g, c) for g, score in enumerate(scores) for c, s in enumerate(score)]
    moved = 0

    def fraction() -> float:
        return costs.fraction(counts / costs.channels)

    if fraction() > target:
        for _, g, c in sorted(flat):
            if fraction() <= target:
                break
            if keep[g][c] and counts[g] > 1:
                keep[g][c], counts[g], moved = False, counts[g] - 1, moved + 1
    for _, g, c in sorted(flat, reverse=True):
        if keep[g][c]:
            continue
        counts[g] += 1
        if fraction() > target:
            counts[g] -= 1
            continue
        keep[g][c], moved = True, moved + 1
    return moved


def _scale_channels(variable: Any, axis: int, factor: np.ndarray) -> None:
    value = np.asarray(keras.ops.convert_to_numpy(variable))
    shape = [1] * value.ndim
    shape[axis] = factor.size
    variable.assign((value * factor.reshape(shape)).astype(value.dtype))


def _fold(model: keras.Model, gated: keras.Model, gate: HardConcreteGate, z: np.ndarray) -> None:
    producer_name, norm_name = gate_producer(gated, gate)
    producer = model.get_layer(producer_name)
    if norm_name is not None:
        norm = model.get_layer(norm_name)
        _scale_channels(norm.gamma, -1, z)
        _scale_channels(norm.beta, -1, z)
        return
    activation = getattr(getattr(producer, "activation", None), "__name__", "linear")
    if activation in ("linear", "relu"):
        _scale_channels(producer.kernel, -1, z)
        if producer.bias is not None:
            _scale_channels(producer.bias, -1, z)
        return
    for reader in consumers_of(model)[producer_name]:  # Dense/Conv: scale their input rows
        _scale_channels(reader.kernel, reader.kernel.ndim - 2, z)


def remove_l0_gates(
    model: keras.Model, target_macs: float | None = None, batchnorm_data: Any = None
) -> tuple[keras.Model, L0Report]:
    """The model without its gates: off channels masked to zero, gate values folded in.

    Args:
        model: A model from :func:`add_l0_gates` (trained with its gates).
        target_macs: If given, the kept channels are rounded so that the MACs
            are at most this fraction of the dense model's, as close as one
            channel allows (see the module docstring).
        batchnorm_data: Training inputs (arrays, a dataset, batches; up to 1,024
            examples are read) on which the returned model's BatchNorm statistics
            are re-estimated (one forward pass in training mode per batch of 64).
            The gates' noise in training left the statistics of every
            BatchNorm after a gate describing noisy activations, not the ones
            the deterministic model computes; the re-estimation matches them.

    Returns:
        ``(model, report)``: a copy with the original layers and names, whose
        pruned channels ``shrink_model`` removes, and an :class:`L0Report`.

    Raises:
        ValueError: If ``model`` has no gate, or ``target_macs`` is not in (0, 1]
            or below what one channel per gated layer costs.

    Example:
        >>> pruned, report = remove_l0_gates(gated, target_macs=0.5)
        >>> small = tfc.shrink_model(pruned)
    """
    _check_graph(model)
    if target_macs is not None:
        target_macs = validate_target_macs(target_macs)
    gates, costs = gated_costs(model, target_macs, "remove_l0_gates")
    calibration = None
    if batchnorm_data is not None:
        calibration = calibration_data(
            batchnorm_data, model, max_samples=1024, argument="batchnorm_data"
        )
    sync_state(model)
    values = [gate.deterministic_gates() for gate in gates]
    keep = [v > 0 for v in values]
    scores = [gate.log_alpha_values() for gate in gates]
    for k, s in zip(keep, scores):
        if not k.any():
            k[int(np.argmax(s))] = True
    counts = np.array([k.sum() for k in keep], np.float64)
    gates_fraction = costs.fraction(counts / costs.channels)
    moved = 0 if target_macs is None else _round_to_target(keep, scores, costs, target_macs)
    owners = {id(gate): head_owner(model, gate) for gate in gates}
    channel_gates = {gate.name for gate in gates if owners[id(gate)] is None}

    def replace(layer: keras.layers.Layer) -> Any:
        return plain_attention(layer) if isinstance(layer, GatedMultiHeadAttention) else None

    def call(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        if layer.name in channel_gates:
            return args[0]
        return layer(*args, **kwargs)

    plain, _ = rewrite_model(model, replace, call_function=call)
    kept: dict[str, tuple[int, int]] = {}
    for gate, value, k in zip(gates, values, keep):
        # a channel the rounding added back runs with its weights as they are (z = 1)
        z = np.where(k, np.where(value > 0, value, 1.0), 0.0)
        owner = owners[id(gate)]
        if owner is not None:
            layer = plain.get_layer(owner.name)
            fold_heads(layer, z)
            masked = head_variables(layer)
        else:
            _fold(plain, model, gate, z)
            layer = plain.get_layer(gate_producer(model, gate)[0])
            target = PrunableWeight(layer.kernel, layer=layer, channel_axes=(-1,))
            masked = [(layer.kernel, layer.kernel.ndim - 1), *channel_followers(target)]
        for variable, axis in masked:
            _mask_along(plain, variable, axis, k)
        kept[layer.name] = (int(k.sum()), int(k.size))
    if calibration is not None:
        reestimate_batchnorm(plain, calibration.input_batches(64))
    counts = np.array([k.sum() for k in keep], np.float64)
    report = L0Report(kept, gates_fraction, costs.fraction(counts / costs.channels), moved)
    return plain, report


def _mask_along(model: keras.Model, variable: Any, axis: int, keep: np.ndarray) -> None:
    """Zeroes ``variable``'s slices along ``axis`` where ``keep`` is False, with a PruningMask."""
    mask = attach_mask(model, owner_of(model, variable), variable)
    shape = [1] * len(variable.shape)
    shape[axis] = keep.size
    full = np.broadcast_to(keep.reshape(shape), tuple(variable.shape)).astype(np.float32)
    mask.mask.assign(full.astype(keras.backend.standardize_dtype(mask.mask.dtype)))
    value = np.asarray(keras.ops.convert_to_numpy(variable))
    variable.assign((value * full).astype(value.dtype))
