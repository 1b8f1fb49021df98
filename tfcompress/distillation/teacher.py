"""A distillation teacher you add to ``model.fit`` on the student itself.

Keras' ``keras.distillation.Distiller`` wraps teacher and student in a new
model, so the model you fit is no longer your student and pruning callbacks or
an existing training script do not see it. Here the student stays the model
being fitted: the callback wraps ``student.compute_loss`` (whose arguments
include the batch ``x``, so the teacher sees it) and rebuilds the train
function once when training begins. The extra term is added only when
``compute_loss`` is called with ``training=True`` (the train step); the test
step used by validation and ``evaluate`` gets the original loss. On
``on_train_end`` the original ``compute_loss`` is put back and the student is
an ordinary Keras model again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
from keras import ops

from tfcompress.core.serialization import deserialize_schedule, serialize_schedule
from tfcompress.distillation.losses import blend_losses, hint_loss, soft_target_loss


def _scale_for_replicas(value: Any) -> Any:
    """Divides by the replica count, as Keras scales its compiled loss under tf.distribute."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            value = ops.multiply(value, ops.cast(1.0 / replicas, value.dtype))
    return value


__all__ = ["DistillationTeacher"]

Scalar = float | Callable[[Any], Any]
_SCHEDULE_CHECK_POINTS = 65


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _has_graph(model: Any) -> bool:
    try:
        return model.inputs is not None and len(model.inputs) > 0
    except (AttributeError, ValueError):
        return False


def _inputs(model: keras.Model) -> Any:
    # A single input unwrapped, so the extractor takes the same structure as the model.
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def _output_shapes(model: keras.Model) -> list[tuple] | None:
    if not _has_graph(model):
        return None
    return [tuple(t.shape[1:]) for t in keras.tree.flatten(model.outputs)]


def _normalize_hints(hints: Mapping[str, str] | Sequence[tuple[str, str]] | None) -> list:
    if hints is None:
        return []
    pairs = list(hints.items()) if isinstance(hints, Mapping) else list(hints)
    for pair in pairs:
        if not (
            isinstance(pair, (tuple, list))
            and len(pair) == 2
            and all(isinstance(n, str) for n in pair)
        ):
            raise ValueError(
                "`hints` must map student layer names to teacher layer names "
                f"({{'student_layer': 'teacher_layer'}} or a list of pairs), got {hints!r}."
            )
    return [tuple(p) for p in pairs]


@keras.saving.register_keras_serializable(package="tfcompress")
class DistillationTeacher(keras.callbacks.Callback):
    """Adds a teacher's soft-target loss to the student's loss during ``fit``.

    The loss the student minimises becomes
    ``(1 - alpha) * student_loss + alpha * distillation``, where
    ``student_loss`` is what the student's own ``compute_loss`` returns (the
    compiled loss plus any regularization losses) and ``distillation`` is

    - by default, Hinton's soft-target term
      ``T^2 * KL(softmax(teacher/T) || softmax(student/T))`` on the outputs
      (:func:`tfcompress.ops.soft_target_loss`), or the sum of the given
      ``losses`` (``keras.distillation.LogitsDistillation`` /
      ``FeatureDistillation`` objects, reused as they are);
    - plus ``hint_weight`` times the mean squared difference between each pair
      of named intermediate layers in ``hints`` (FitNets).

    The teacher runs with ``training=False`` and no gradient reaches it. The
    student's compiled metrics, validation numbers and ``evaluate`` are
    untouched, and after training the student is an ordinary model (nothing of
    tfcompress is saved with it). ``alpha`` and ``temperature`` may be
    ``step -> value`` schedules (e.g. a ``keras.optimizers.schedules``
    object), evaluated inside the train step at ``optimizer.iterations``.

    Hint layers need a Functional or Sequential student and teacher; the
    student's hint layers are evaluated by a second pass over the student's
    layers up to them (as ``keras.distillation.Distiller`` does).

    Args:
        teacher: A trained Keras model taking the same inputs as the student,
            with outputs of the same shape (logits).
        temperature: Softmax temperature ``> 0``, or a schedule.
        alpha: Weight of the teacher's term in ``[0, 1]``, or a schedule.
        losses: ``keras.distillation.DistillationLoss`` objects to use instead
            of the built-in soft-target term (one or a list).
        loss_weights: Weights for ``losses`` (default all 1).
        hints: ``{student_layer_name: teacher_layer_name}`` (or a list of
            pairs) whose outputs, of equal shapes, are matched by MSE.
        hint_weight: Weight of the hint terms (>= 0).

    Raises:
        ValueError: At construction, for ``temperature <= 0``, ``alpha``
            outside ``[0, 1]``, a teacher that is not a Keras model, malformed
            ``losses``/``hints``, or a hint layer the teacher does not have.
            When training begins (before the student is changed), for a
            student hint layer that does not exist, a schedule that leaves its
            range, or a teacher whose output shape differs from the student's.

    Example:
        >>> teacher = tfc.models.digits_cnn(); tfc.models.train_classifier(teacher, data)
        >>> student = tfc.models.digits_cnn()  # or a narrow / pruned / QAT student
        >>> student.compile("adam", keras.losses.SparseCategoricalCrossentropy(True),
        ...                 metrics=["accuracy"])
        >>> student.fit(x, y, epochs=5,
        ...             callbacks=[tfc.callbacks.DistillationTeacher(teacher, 4.0, 0.7)])

    References:
        Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural Network", 2015.
        Romero et al. "FitNets: Hints for Thin Deep Nets", ICLR 2015.
    """

    def __init__(
        self,
        teacher: keras.Model,
        temperature: Scalar = 4.0,
        alpha: Scalar = 0.5,
        losses: Any | Sequence[Any] | None = None,
        loss_weights: Sequence[float] | None = None,
        hints: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        hint_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(teacher, keras.Model):
            raise ValueError(f"`teacher` must be a keras.Model, got {teacher!r}.")
        if not callable(temperature) and (not _is_number(temperature) or temperature <= 0):
            raise ValueError(f"`temperature` must be > 0 or a schedule, got {temperature!r}.")
        if not callable(alpha) and (not _is_number(alpha) or not 0.0 <= alpha <= 1.0):
            raise ValueError(f"`alpha` must be in [0, 1] or a schedule, got {alpha!r}.")
        if not _is_number(hint_weight) or hint_weight < 0:
            raise ValueError(f"`hint_weight` must be a number >= 0, got {hint_weight!r}.")
        loss_list = (
            None
            if losses is None
            else (list(losses) if isinstance(losses, (list, tuple)) else [losses])
        )
        for item in loss_list or []:
            if not isinstance(item, keras.distillation.DistillationLoss):
                raise ValueError(
                    f"`losses` must hold keras.distillation.DistillationLoss objects, got {item!r}."
                )
        if loss_weights is not None and (loss_list is None or len(loss_weights) != len(loss_list)):
            raise ValueError(
                f"`loss_weights` must have one weight per loss ({len(loss_list or [])}), "
                f"got {loss_weights!r}."
            )
        pairs = _normalize_hints(hints)
        teacher_names = [t for _, t in pairs] + [
            item.teacher_layer_name
            for item in loss_list or []
            if getattr(item, "teacher_layer_name", None)
        ]
        if teacher_names and not _has_graph(teacher):
            raise ValueError(
                "Hint / feature distillation needs a Functional or Sequential teacher; "
                f"the teacher {teacher.name!r} has no symbolic inputs."
            )
        existing = {layer.name for layer in teacher.layers}
        for name in teacher_names:
            if name not in existing:
                raise ValueError(
                    f"`hints`: the teacher {teacher.name!r} has no layer named {name!r}; "
                    f"its layers are {sorted(existing)}."
                )
        self.teacher = teacher
        self.temperature = temperature
        self.alpha = alpha
        self.losses = loss_list
        self.loss_weights = None if loss_weights is None else [float(w) for w in loss_weights]
        self.hints = pairs
        self.hint_weight = float(hint_weight)
        self._installed: dict[str, Any] | None = None
        self._traced_step: Any = None

    # ----------------------------------------------------------------- set-up

    def _feature_pairs(self) -> list[tuple[str, str]]:
        """(student layer, teacher layer) pairs needed by hints and by ``losses``."""
        pairs = list(self.hints)
        for item in self.losses or []:
            s = getattr(item, "student_layer_name", None)
            t = getattr(item, "teacher_layer_name", None)
            if s or t:
                pairs.append((s, t))
        return pairs

    def _check_schedules(self) -> None:
        epochs = (self.params or {}).get("epochs") or 1
        steps = (self.params or {}).get("steps") or 1
        start = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        end = start + epochs * steps
        count = min(_SCHEDULE_CHECK_POINTS, end - start + 1)
        points = sorted(
            {start + round(i * (end - start) / max(count - 1, 1)) for i in range(count)}
        )
        for name, schedule, ok, expected in (
            ("temperature", self.temperature, lambda v: v > 0, "> 0"),
            ("alpha", self.alpha, lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
        ):
            if not callable(schedule):
                continue
            for step in points:
                value = float(keras.ops.convert_to_numpy(schedule(step)))
                if not ok(value):
                    raise ValueError(
                        f"The `{name}` schedule gives {value} at step {step}; it must be "
                        f"{expected} at every training step."
                    )

    def _build_extractors(self, student: keras.Model) -> tuple[Any, Any]:
        pairs = self._feature_pairs()
        if not pairs:
            return None, None
        if not _has_graph(student):
            raise ValueError(
                "Hint / feature distillation needs a Functional or Sequential student; "
                f"the student {student.name!r} has no symbolic inputs."
            )
        existing = {layer.name for layer in student.layers}
        for s_name, _ in pairs:
            if s_name is not None and s_name not in existing:
                raise ValueError(
                    f"`hints`: the student {student.name!r} has no layer named {s_name!r}; "
                    f"its layers are {sorted(existing)}."
                )

        def out(model: keras.Model, name: str | None) -> Any:
            return model.outputs[0] if name is None else model.get_layer(name).output

        # Flat output lists; `_add_teacher` splits them at len(teacher.outputs).
        teacher = keras.Model(
            _inputs(self.teacher),
            list(self.teacher.outputs) + [out(self.teacher, t) for _, t in pairs],
            name=f"{self.teacher.name}_distillation_features",
        )
        student_features = keras.Model(
            _inputs(student),
            [out(student, s) for s, _ in pairs],
            name=f"{student.name}_distillation_features",
        )
        return teacher, student_features

    def on_train_begin(self, logs: dict | None = None) -> None:
        model = self.model
        # Every check first: a bad configuration must leave the student as it was.
        s_shapes, t_shapes = _output_shapes(model), _output_shapes(self.teacher)
        if s_shapes is not None and t_shapes is not None and s_shapes != t_shapes:
            raise ValueError(
                f"The teacher's output shape {t_shapes} differs from the student's "
                f"{s_shapes} (batch axis excluded); distillation needs equal shapes."
            )
        self._check_schedules()
        teacher_features, student_features = self._build_extractors(model)

        self._installed = {
            "own_compute_loss": model.__dict__.get("compute_loss"),
            "has_training_arg": model._compute_loss_has_training_arg,
        }
        original = model.compute_loss
        takes_training = model._compute_loss_has_training_arg

        def compute_loss(x=None, y=None, y_pred=None, sample_weight=None, training=True):
            if takes_training:
                loss = original(x, y, y_pred, sample_weight, training=training)
            else:
                loss = original(x, y, y_pred, sample_weight)
            if not training or loss is None:
                return loss
            return self._add_teacher(
                loss, x, y_pred, sample_weight, teacher_features, student_features
            )

        model.compute_loss = compute_loss
        model._compute_loss_has_training_arg = True
        if keras.backend.backend() == "jax" and (
            callable(self.temperature) or callable(self.alpha)
        ):
            self._capture_jax_step(model)
        model.make_train_function(force=True)

    def _capture_jax_step(self, model: keras.Model) -> None:
        """Lets schedules see the step inside the compiled JAX train step.

        The JAX trainer passes the optimizer's state to ``compute_loss_and_updates``
        as arguments; ``optimizer.iterations`` itself is emptied during ``fit``
        (and would be a compile-time constant). Wrapping that (public) method
        picks the traced step out of its ``optimizer_variables``.
        """
        index = next(
            (i for i, v in enumerate(model.optimizer.variables) if v is model.optimizer.iterations),
            None,
        )
        if index is None:
            raise ValueError(
                "alpha/temperature schedules on the JAX backend need the optimizer's "
                f"`iterations` among its variables; {type(model.optimizer).__name__} hides "
                "it. Pass numbers instead of schedules."
            )
        original = model.compute_loss_and_updates
        self._installed["own_compute_loss_and_updates"] = model.__dict__.get(
            "compute_loss_and_updates"
        )

        def compute_loss_and_updates(*args: Any, **kwargs: Any) -> Any:
            optimizer_variables = kwargs.get("optimizer_variables")
            self._traced_step = None if optimizer_variables is None else optimizer_variables[index]
            try:
                return original(*args, **kwargs)
            finally:
                self._traced_step = None

        model.compute_loss_and_updates = compute_loss_and_updates

    def on_train_end(self, logs: dict | None = None) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._installed is None:
            return
        model = self.model
        own = self._installed["own_compute_loss"]
        if own is None:
            model.__dict__.pop("compute_loss", None)
        else:
            model.compute_loss = own
        model._compute_loss_has_training_arg = self._installed["has_training_arg"]
        if "own_compute_loss_and_updates" in self._installed:
            own = self._installed["own_compute_loss_and_updates"]
            if own is None:
                model.__dict__.pop("compute_loss_and_updates", None)
            else:
                model.compute_loss_and_updates = own
        model.train_function = None  # the next fit builds a plain one
        self._installed = None

    # ---------------------------------------------------------- in the step

    def _value(self, value: Scalar) -> Any:
        if callable(value):
            step = self._traced_step
            if step is None:
                step = self.model.optimizer.iterations
            return ops.cast(value(step), "float32")
        return value

    def _add_teacher(
        self,
        loss: Any,
        x: Any,
        y_pred: Any,
        sample_weight: Any,
        teacher_features: Any,
        student_features: Any,
    ) -> Any:
        if teacher_features is None:
            teacher_out, t_feats = self.teacher(x, training=False), []
        else:
            flat = keras.tree.flatten(teacher_features(x, training=False))
            n_out = len(self.teacher.outputs)
            teacher_out, t_feats = flat[:n_out], flat[n_out:]
        teacher_out = keras.tree.map_structure(ops.stop_gradient, teacher_out)
        t_flat, s_flat = keras.tree.flatten(teacher_out), keras.tree.flatten(y_pred)
        t_shapes = [tuple(t.shape[1:]) for t in t_flat]
        s_shapes = [tuple(s.shape[1:]) for s in s_flat]
        if t_shapes != s_shapes:
            self._restore()
            raise ValueError(
                f"The teacher's output shape {t_shapes} differs from the student's "
                f"{s_shapes} (batch axis excluded); distillation needs equal shapes."
            )
        teacher_logits = t_flat[0] if len(t_flat) == 1 else t_flat
        student_logits = s_flat[0] if len(s_flat) == 1 else s_flat

        terms = []
        if self.losses is None:
            temperature = self._value(self.temperature)
            terms.extend(
                soft_target_loss(t, s, temperature, sample_weight) for t, s in zip(t_flat, s_flat)
            )
        if student_features is not None:
            s_feats = keras.tree.flatten(student_features(x, training=True))
        feature_index = 0
        for i, item in enumerate(self.losses or []):
            weight = 1.0 if self.loss_weights is None else self.loss_weights[i]
            if getattr(item, "teacher_layer_name", None) or getattr(
                item, "student_layer_name", None
            ):
                index = len(self.hints) + feature_index
                feature_index += 1
                term = item.compute_loss(ops.stop_gradient(t_feats[index]), s_feats[index])
            else:
                term = item.compute_loss(teacher_logits, student_logits)
            terms.append(weight * ops.cast(term, "float32"))
        for i in range(len(self.hints)):
            terms.append(self.hint_weight * hint_loss(t_feats[i], s_feats[i], sample_weight))
        distillation = _scale_for_replicas(ops.cast(ops.sum(ops.stack(terms)), loss.dtype))
        return blend_losses(loss, distillation, self._value(self.alpha))

    # ---------------------------------------------------------- serialization

    def get_config(self) -> dict[str, Any]:
        """Config; the teacher is stored as its architecture (not its weights)."""
        return {
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "temperature": serialize_schedule(self.temperature),
            "alpha": serialize_schedule(self.alpha),
            "losses": None
            if self.losses is None
            else [keras.saving.serialize_keras_object(item) for item in self.losses],
            "loss_weights": self.loss_weights,
            "hints": [list(p) for p in self.hints] or None,
            "hint_weight": self.hint_weight,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DistillationTeacher:
        config = dict(config)
        config["teacher"] = keras.saving.deserialize_keras_object(config["teacher"])
        config["temperature"] = deserialize_schedule(config["temperature"])
        config["alpha"] = deserialize_schedule(config["alpha"])
        if config.get("losses") is not None:
            config["losses"] = [
                keras.saving.deserialize_keras_object(item) for item in config["losses"]
            ]
        if config.get("hints") is not None:
            config["hints"] = [tuple(p) for p in config["hints"]]
        return cls(**config)
