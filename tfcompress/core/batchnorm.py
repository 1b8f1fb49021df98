"""BatchNorm statistics re-estimated on calibration data, for scoring a changed model.

Pruning channels (or quantizing weights) changes the activations every later
BatchNormalization sees, but its moving mean and variance still describe the
old ones, so the changed model in inference mode is worse than it needs to be,
and worse by different amounts for different changes. Scoring candidates that
way ranks them by the mismatch as much as by what they remove. Re-estimating
the statistics on a few hundred calibration inputs first (as a fine-tune would
within its first steps) scores what the change itself costs.

``recalibrated_batchnorm(model, batches)`` sets every BatchNormalization's
moving statistics to those of its inputs over ``batches`` (one forward pass in
training mode per batch, with momentum 0 for the first batch and a running
average after), and restores the original statistics (every non-trainable
variable) when the block ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import keras
import numpy as np

from tfcompress.core.walk import walk_layers

__all__ = ["batchnorm_layers", "recalibrated_batchnorm", "reestimate_batchnorm"]


def batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization inside ``model`` (nested models included)."""
    return [
        layer
        for _, layer in walk_layers(model, sublayers=True, models=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


@contextlib.contextmanager
def recalibrated_batchnorm(model: keras.Model, batches: Iterable[Any]) -> Iterator[int]:
    """Within the block, ``model``'s BatchNorm statistics are those of ``batches``.

    The statistics of batch ``k`` (1-based) enter with weight ``1/k``, so after
    all batches each layer holds the mean of the per-batch means and variances.
    A model without BatchNormalization is left as it is (nothing runs).

    Args:
        model: The model (changed in place inside the block only).
        batches: Input batches in the model's input structure.

    Yields:
        How many BatchNormalization layers were re-estimated.

    Example:
        >>> with recalibrated_batchnorm(pruned, calib.input_batches(256)):
        ...     loss = evaluate(pruned)
    """
    if not batchnorm_layers(model):
        yield 0
        return
    # Every non-trainable variable: a training-mode pass may also move other state
    # (a quantizer's moving range); all of it is put back on exit.
    saved = [(v, np.asarray(keras.ops.convert_to_numpy(v))) for v in model.non_trainable_variables]
    try:
        yield reestimate_batchnorm(model, batches)
    finally:
        for variable, value in saved:
            variable.assign(value)


def reestimate_batchnorm(model: keras.Model, batches: Iterable[Any]) -> int:
    """Sets ``model``'s BatchNorm moving statistics to those of ``batches``, for good.

    As :func:`recalibrated_batchnorm` (batch ``k`` weighs ``1/k``), without
    putting the old statistics back: for a model whose training-time
    activations differed from its inference ones (stochastic gates, noise).
    Other state a training-mode pass moves (a quantizer's moving range) moves
    too.

    Returns:
        How many BatchNormalization layers were re-estimated.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    momenta = [(layer, layer.momentum) for layer in layers]
    try:
        for count, batch in enumerate(batches, start=1):
            for layer in layers:
                # moving = momentum * moving + (1 - momentum) * batch: a running mean of batches
                layer.momentum = 1.0 - 1.0 / count
            model(batch, training=True)
    finally:
        for layer, momentum in momenta:
            layer.momentum = momentum
    return len(layers)
