"""Loss gradients of chosen variables on one batch, on the TensorFlow or JAX backend.

Gradient criteria (Taylor importance, RigL regrowth, SNIP) need ``dL/dw``
outside the compiled train step a few times per run. Keras has no
backend-neutral ``grad``, so this dispatches: TensorFlow uses
:func:`tfcompress.core.tf_gradients.loss_gradients` (a ``GradientTape``), JAX
differentiates ``model.stateless_call`` with ``jax.grad``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

__all__ = ["input_gradients", "loss_gradients", "require_loss"]


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
        variables: The variables to differentiate (the model's own variables).
        x: A batch of inputs.
        y: Its targets.
        loss: ``loss(y_true, y_pred) -> scalar``; required if ``model`` is not compiled.

    Returns:
        One NumPy gradient per variable (zeros where the loss does not depend on it,
        and for non-trainable variables on JAX).

    Raises:
        ValueError: If no loss is known.
        RuntimeError: On a backend other than TensorFlow or JAX.

    Example:
        >>> grads = loss_gradients(model, [model.layers[0].kernel], x[:256], y[:256])
    """
    require_loss(model, loss)
    backend = keras.backend.backend()
    if backend == "jax":
        return _jax_loss_gradients(model, variables, x, y, loss)
    if backend != "tensorflow":
        raise RuntimeError(
            f"gradient-based pruning criteria (taylor, RigL, SNIP) need the TensorFlow or "
            f"JAX backend, but Keras is running on {backend!r}; use criterion='magnitude'"
        )
    from tfcompress.core.tf_gradients import loss_gradients as tf_loss_gradients

    return tf_loss_gradients(model, variables, x, y, loss=loss)


def require_loss(model: keras.Model, loss: Callable[[Any, Any], Any] | None) -> None:
    """Raises unless ``loss`` is given or ``model`` is compiled (has a loss)."""
    if loss is None and not getattr(model, "compiled", False):
        raise ValueError(
            "gradients need a loss: compile the model first or pass loss=, e.g. "
            "keras.losses.SparseCategoricalCrossentropy(from_logits=True)"
        )


def _jax_loss_gradients(
    model: keras.Model,
    variables: Sequence[Any],
    x: Any,
    y: Any,
    loss: Callable[[Any, Any], Any] | None,
) -> list[np.ndarray]:
    import jax

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    metrics = [v.value for v in model.metrics_variables] if loss is None else []
    x = keras.tree.map_structure(keras.ops.convert_to_tensor, x)
    y = keras.ops.convert_to_tensor(y)

    takes_training = "training" in inspect.signature(model.call).parameters
    kwargs = {"training": False} if takes_training else {}

    def value(trainable):
        y_pred, _ = model.stateless_call(trainable, non_trainable, x, **kwargs)
        if loss is not None:
            return keras.ops.mean(loss(y, y_pred))
        total, _ = model.stateless_compute_loss(
            trainable, non_trainable, metrics, x=x, y=y, y_pred=y_pred, training=False
        )
        return total

    grads = jax.grad(value)(trainable)
    by_id = {id(v): g for v, g in zip(model.trainable_variables, grads)}
    out = []
    for v in variables:
        g = by_id.get(id(v))
        out.append(np.zeros(tuple(v.shape), np.float32) if g is None else np.asarray(g))
    return out


def input_gradients(
    model: keras.Model, x: np.ndarray, objective: Callable[[Any], Any]
) -> tuple[np.ndarray, np.ndarray]:
    """``d objective(model(x)) / dx`` in inference mode, and the model's outputs.

    ``objective(y_pred)`` returns one value per example (its sum is differentiated,
    so each example's gradient is its own). Used by attacks that move the inputs
    (:func:`tfcompress.reporting.robustness`).

    Args:
        model: A single-input model.
        x: A batch of inputs (float).
        objective: Maps the model's outputs to a per-example value.

    Returns:
        ``(gradient, outputs)`` as NumPy arrays; the gradient has ``x``'s shape.

    Raises:
        RuntimeError: On a backend other than TensorFlow or JAX.

    Example:
        >>> grad, logits = input_gradients(model, x, lambda z: keras.ops.max(z, axis=-1))
    """
    backend = keras.backend.backend()
    x = np.asarray(x, np.float32)
    if backend == "jax":
        import jax

        def value(inputs):
            outputs = model(inputs, training=False)
            return keras.ops.sum(objective(outputs)), outputs

        grad, outputs = jax.grad(value, has_aux=True)(keras.ops.convert_to_tensor(x))
        return np.asarray(grad), np.asarray(outputs)
    if backend != "tensorflow":
        raise RuntimeError(
            f"input gradients need the TensorFlow or JAX backend, but Keras is running on "
            f"{backend!r}"
        )
    from tfcompress.core.tf_gradients import input_gradients as tf_input_gradients

    return tf_input_gradients(model, x, objective)
