"""Pieces the suite's methods share: copying a model, pruning it once, the layers a
workload prunes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from tfcompress.bench.api import Workload
from tfcompress.pruning.masks import PruningCriterion, compute_masks
from tfcompress.pruning.prunable import find_prunable

__all__ = ["RandomCriterion", "copy_model", "measured_once", "prune_once", "pruned_layers"]

_MEASURED: dict[tuple, Any] = {}


def copy_model(model: keras.Model) -> keras.Model:
    """An independent copy with the same architecture and weights."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _architecture(model: keras.Model) -> str:
    """The layers' classes and configurations in order, without their names.

    Not ``model.to_json()``: every build of a model names its unnamed input
    afresh (``input_layer_7``), so two builds of one architecture, one per
    arm, would never share a measurement.
    """
    items = []
    for layer in model.layers:
        config = dict(layer.get_config())
        config.pop("name", None)
        items.append([type(layer).__name__, config])
    return json.dumps(items, sort_keys=True, default=repr)


def measured_once(
    what: str, model: keras.Model, compute: Callable[[], Any], *, weights: bool = True
) -> tuple[Any, bool]:
    """``compute()``, once per ``what`` and starting model in this process: ``(value, reused)``.

    The budgeted methods measure things that do not depend on the level (a
    plan's per-layer costs and errors) or not even on the weights (a shrunk
    model's latency); a sweep over levels and seeds measures them once. The
    key holds the architecture and, with ``weights``, a digest of every
    weight, so a different starting model (another seed or configuration)
    never sees another's measurement.
    """
    digest = hashlib.sha1(_architecture(model).encode())
    if weights:
        for value in model.get_weights():
            digest.update(np.ascontiguousarray(value).tobytes())
    key = (what, digest.hexdigest())
    if key in _MEASURED:
        return _MEASURED[key], True
    value = _MEASURED[key] = compute()
    return value, False


def pruned_layers(workload: Workload) -> Any:
    """The layer selection pruning methods use on ``workload``.

    Classifiers: every prunable layer. The language model: its linear layers
    (attention projections, FFN, output head), not the byte embedding, so
    every method prunes the same weights.
    """
    if workload.task == "language_model":
        return lambda layer: isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense))
    return None


class RandomCriterion(PruningCriterion):
    """Random scores (seeded): the sanity-check baseline every method must beat."""

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)

    def contributions(self, weight: np.ndarray, gradient: np.ndarray | None = None) -> np.ndarray:
        return self._rng.random(weight.shape)

    def get_config(self) -> dict:
        return {"seed": self.seed}


def prune_once(
    model: keras.Model,
    sparsity: float,
    *,
    layers: Any = None,
    scope: str = "layer",
    criterion: str | PruningCriterion = "magnitude",
    granularity: str = "unstructured",
) -> keras.Model:
    """A copy of ``model`` with ``sparsity`` of the selected weights set to zero, once."""
    pruned = copy_model(model)
    found = find_prunable(pruned, layers)
    values = [np.asarray(w.variable.numpy()) for w in found]
    masks = compute_masks(
        values,
        sparsity,
        granularity,
        channel_axes=[w.channel_axes for w in found],
        scope=scope,
        criterion=criterion,
    )
    for weight, value, mask in zip(found, values, masks):
        weight.variable.assign(value * mask)
    return pruned
