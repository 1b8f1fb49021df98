"""Pieces the suite's methods share: copying a model, pruning it once, the layers a
workload prunes."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tfcompress.bench.api import Workload
from tfcompress.pruning.masks import PruningCriterion, compute_masks
from tfcompress.pruning.prunable import find_prunable

__all__ = ["RandomCriterion", "copy_model", "prune_once", "pruned_layers"]


def copy_model(model: keras.Model) -> keras.Model:
    """An independent copy with the same architecture and weights."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


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
