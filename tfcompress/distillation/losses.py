"""Knowledge-distillation loss math on ``keras.ops`` (any backend).

The callback in :mod:`tfcompress.distillation.teacher` only wires these into
``model.compute_loss``; the numbers are defined here so they can be tested
against a NumPy reference on fixed logits.
"""

from __future__ import annotations

from typing import Any

from keras import ops

__all__ = ["blend_losses", "hint_loss", "soft_target_loss"]


def _weighted_mean(per_sample: Any, sample_weight: Any | None) -> Any:
    # Same reduction as Keras' "sum_over_batch_size": sum(w * l) / batch size.
    if sample_weight is None:
        return ops.mean(per_sample)
    weight = ops.cast(ops.reshape(sample_weight, ops.shape(per_sample)), per_sample.dtype)
    return ops.sum(per_sample * weight) / ops.cast(ops.shape(per_sample)[0], per_sample.dtype)


def soft_target_loss(
    teacher_logits: Any,
    student_logits: Any,
    temperature: Any = 4.0,
    sample_weight: Any | None = None,
) -> Any:
    """Hinton et al.'s soft-target loss: ``T^2 * KL(softmax(t/T) || softmax(s/T))``.

    The KL divergence is summed over the last (class) axis and averaged over
    every other axis (the batch), weighted by ``sample_weight`` if given. It is
    computed from log-softmax, so it is finite for any logits (Keras'
    ``KLDivergence`` clips probabilities at 1e-7 instead, which differs from
    this by at most a few 1e-7 for ordinary logits). The ``T^2`` factor keeps
    the gradient's scale independent of the temperature.

    Args:
        teacher_logits: Teacher logits, shape ``(batch, ..., classes)``. No
            gradient flows into them.
        student_logits: Student logits, same shape.
        temperature: Softmax temperature ``T > 0`` (a float or scalar tensor).
        sample_weight: Optional per-sample weights, shape ``(batch,)``.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: If ``temperature`` is a Python number ``<= 0``.

    Example:
        >>> t = np.array([[2.0, 0.0, -1.0]]); s = np.array([[1.0, 0.5, 0.0]])
        >>> float(soft_target_loss(t, s, temperature=2.0))  # doctest: +ELLIPSIS
        0.09...

    References:
        Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural Network", 2015.
    """
    if isinstance(temperature, (int, float)) and temperature <= 0:
        raise ValueError(f"`temperature` must be > 0, got {temperature!r}.")
    student_logits = ops.convert_to_tensor(student_logits)
    dtype = student_logits.dtype
    teacher_logits = ops.stop_gradient(ops.cast(teacher_logits, dtype))
    temperature = ops.cast(temperature, dtype)
    log_p_teacher = ops.log_softmax(teacher_logits / temperature, axis=-1)
    log_p_student = ops.log_softmax(student_logits / temperature, axis=-1)
    kl = ops.sum(ops.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
    # Average any extra (e.g. sequence) axes per sample, then over the batch.
    if len(kl.shape) > 1:
        kl = ops.mean(ops.reshape(kl, (ops.shape(kl)[0], -1)), axis=-1)
    return temperature * temperature * _weighted_mean(kl, sample_weight)


def hint_loss(
    teacher_features: Any, student_features: Any, sample_weight: Any | None = None
) -> Any:
    """FitNets-style hint loss: mean squared difference of intermediate features.

    Args:
        teacher_features: Teacher activations, shape ``(batch, ...)``. No
            gradient flows into them.
        student_features: Student activations of the same shape.
        sample_weight: Optional per-sample weights, shape ``(batch,)``.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: If the static shapes differ (batch axis excluded).

    Example:
        >>> float(hint_loss(np.ones((2, 3)), np.zeros((2, 3))))
        1.0

    References:
        Romero et al. "FitNets: Hints for Thin Deep Nets", ICLR 2015.
    """
    student_features = ops.convert_to_tensor(student_features)
    teacher_features = ops.stop_gradient(ops.cast(teacher_features, student_features.dtype))
    t_shape, s_shape = tuple(teacher_features.shape[1:]), tuple(student_features.shape[1:])
    if None not in t_shape + s_shape and t_shape != s_shape:
        raise ValueError(
            "Hint features must have the same shape: teacher features have shape "
            f"{t_shape}, student features {s_shape} (batch axis excluded)."
        )
    squared = ops.square(student_features - teacher_features)
    per_sample = ops.mean(ops.reshape(squared, (ops.shape(squared)[0], -1)), axis=-1)
    return _weighted_mean(per_sample, sample_weight)


def blend_losses(student_loss: Any, distillation_loss: Any, alpha: Any) -> Any:
    """``(1 - alpha) * student_loss + alpha * distillation_loss``.

    Args:
        student_loss: The loss the student would be trained on alone.
        distillation_loss: The teacher's term.
        alpha: Weight of the teacher's term, in ``[0, 1]``.

    Returns:
        A scalar tensor of ``student_loss``'s dtype.

    Raises:
        ValueError: If ``alpha`` is a Python number outside ``[0, 1]``.

    Example:
        >>> float(blend_losses(2.0, 4.0, 0.25))
        2.5
    """
    if isinstance(alpha, (int, float)) and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1], got {alpha!r}.")
    student_loss = ops.convert_to_tensor(student_loss)
    dtype = student_loss.dtype
    alpha = ops.cast(alpha, dtype)
    return (1.0 - alpha) * student_loss + alpha * ops.cast(distillation_loss, dtype)
