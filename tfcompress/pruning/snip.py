"""``prune_at_init``: single-shot pruning before training by connection sensitivity (SNIP)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tfcompress.pruning.callbacks import KeepSparsity, validate_data
from tfcompress.pruning.masks import compute_masks, validate_sparsity
from tfcompress.pruning.prunable import LayerSelector, PrunableWeight, find_prunable

__all__ = ["prune_at_init", "snip_masks"]


def snip_masks(
    model: keras.Model,
    data: tuple[Any, Any],
    sparsity: float,
    *,
    loss: Any = None,
    layers: LayerSelector = None,
    scope: str = "global",
) -> list[tuple[PrunableWeight, np.ndarray]]:
    """The SNIP masks of ``model``'s prunable weights; the model is not changed.

    Every connection scores ``|w * dL/dw|`` on ``data`` (one batch, at
    initialization); the lowest ``sparsity`` fraction, ranked across all
    selected layers (``scope="global"``, as in SNIP) or per layer, gets mask 0.

    Args:
        model: A built model (compiled, or pass ``loss``).
        data: ``(x, y)``: a batch of inputs and targets (a few hundred examples).
        sparsity: Fraction of the selected weights to prune, in [0, 1).
        loss: ``loss(y_true, y_pred)``; defaults to the model's compiled loss.
        layers: Which layers: None (all prunable), names, classes or a predicate.
        scope: ``"global"`` (one ranking, SNIP) or ``"layer"``.

    Returns:
        ``(weight, mask)`` pairs: a 0/1 mask of each weight's shape.

    Raises:
        ValueError: For a sparsity outside [0, 1), bad ``data``, an unknown
            scope, a selection that matches no layer, or no known loss.

    Example:
        >>> masks = snip_masks(model, (x[:256], y[:256]), 0.9, loss=loss)
        >>> [float(1 - m.mean()) for _, m in masks]  # sparsity per weight
    """
    sparsity = validate_sparsity(sparsity)
    x, y = validate_data(data, True, "prune_at_init")
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    targets = find_prunable(model, layers)
    from tfcompress.core.gradients import loss_gradients

    variables = [t.variable for t in targets]
    gradients = loss_gradients(model, variables, x, y, loss=loss)
    weights = [np.asarray(keras.ops.convert_to_numpy(v)) for v in variables]
    masks = compute_masks(
        weights, sparsity, "unstructured", scope=scope, criterion="taylor", gradients=gradients
    )
    return list(zip(targets, masks))


def prune_at_init(
    model: keras.Model,
    data: tuple[Any, Any],
    sparsity: float,
    *,
    loss: Any = None,
    layers: LayerSelector = None,
    scope: str = "global",
) -> KeepSparsity:
    """Prunes an untrained model **in place** by SNIP and returns the callback to train it with.

    Two steps in one call: the masks of :func:`snip_masks` (the pure step,
    which changes nothing) are multiplied into ``model``'s weights, which are
    modified in place (no copy is made; the same model object is then
    trained), and a :class:`~tfcompress.callbacks.KeepSparsity` is returned,
    which keeps those connections at zero inside the compiled train step.
    Without that callback, training regrows the pruned weights.

    Args:
        model: A built model (compiled, or pass ``loss``).
        data: ``(x, y)``: a batch of inputs and targets (a few hundred examples).
        sparsity: Fraction of the selected weights to prune, in [0, 1).
        loss: ``loss(y_true, y_pred)``; defaults to the model's compiled loss.
        layers: Which layers: None (all prunable), names, classes or a predicate.
        scope: ``"global"`` (one ranking, SNIP) or ``"layer"``.

    Returns:
        A :class:`tfcompress.callbacks.KeepSparsity` for ``model.fit``.

    Raises:
        ValueError: As :func:`snip_masks`; all raised before any weight changes.

    Example:
        >>> keep = tfc.prune_at_init(model, (x_train[:256], y_train[:256]), 0.9,
        ...                          loss=keras.losses.SparseCategoricalCrossentropy(True))
        >>> model.compile(...); model.fit(x_train, y_train, callbacks=[keep])

    References:
        Lee, Ajanthan, Torr. "SNIP: Single-shot Network Pruning based on
        Connection Sensitivity", ICLR 2019.
    """
    pairs = snip_masks(model, data, sparsity, loss=loss, layers=layers, scope=scope)
    for target, mask in pairs:  # every check is done: only now do weights change
        weight = np.asarray(keras.ops.convert_to_numpy(target.variable))
        target.variable.assign((weight * mask).astype(weight.dtype))
    return KeepSparsity(layers=layers)
