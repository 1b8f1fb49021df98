"""Loss gradients of chosen variables on a batch (TensorFlow), for gradient criteria.

Taylor importance, RigL regrowth and SNIP need ``dL/dw`` outside the compiled
train step, a few times per run; this computes it eagerly on a given batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from tfcompress.core.backend import require_tensorflow_backend

__all__ = ["input_gradients", "loss_gradients"]


def loss_gradients(
    model: keras.Model,
    variables: Sequence[Any],
    x: Any,
    y: Any,
    loss: Callable[[Any, Any], Any] | None = None,
) -> list[np.ndarray]:
    """``dL/dv`` for each of ``variables`` on the batch ``(x, y)``, in inference mode.

    Args:
        model: The model; its compiled loss is used unless ``loss`` is given.
        variables: The variables to differentiate.
        x: A batch of inputs.
        y: Its targets.
        loss: ``loss(y_true, y_pred) -> scalar``; required if ``model`` is not compiled
            (:func:`tfcompress.core.gradients.loss_gradients`, the backend-neutral entry, checks that).

    Returns:
        One NumPy gradient per variable (zeros where the loss does not depend on it).
    """
    require_tensorflow_backend("gradient-based pruning criteria")
    import tensorflow as tf

    with tf.GradientTape() as tape:
        for variable in variables:
            tape.watch(variable.value)
        y_pred = model(x, training=False)
        if loss is not None:
            value = keras.ops.mean(loss(y, y_pred))
        else:
            value = model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)
    grads = tape.gradient(value, [v.value for v in variables])
    # An embedding table's gradient comes as IndexedSlices (only the rows looked up): densify.
    grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
    return [
        np.zeros(tuple(v.shape), np.float32) if g is None else np.asarray(g)
        for v, g in zip(variables, grads)
    ]


def input_gradients(
    model: keras.Model, x: np.ndarray, objective: Any
) -> tuple[np.ndarray, np.ndarray]:
    """TensorFlow half of :func:`tfcompress.core.gradients.input_gradients`."""
    require_tensorflow_backend("input gradients")
    import tensorflow as tf

    inputs = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = model(inputs, training=False)
        value = tf.reduce_sum(objective(outputs))
    grad = tape.gradient(value, inputs)
    grad = tf.zeros_like(inputs) if grad is None else grad
    return np.asarray(grad), np.asarray(outputs)
