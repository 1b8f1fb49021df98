"""Distillation: a small CNN student taught by the demo's float CNN (DistillationTeacher)."""

import keras

from tfcompress.callbacks import DistillationTeacher
from tfcompress.demo.runner import DemoContext, Technique, TechniqueResult
from tfcompress.models import train_classifier


def _student(input_shape: tuple[int, ...]) -> keras.Model:
    # ~30x fewer parameters than the digits CNN.
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu", name="hidden"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="distilled_student",
    )


def _distilled_student(ctx: DemoContext) -> TechniqueResult:
    student = _student(ctx.data.input_shape)
    teacher = DistillationTeacher(ctx.float_model, temperature=2.0, alpha=0.5)
    # A fresh student needs more than the fine-tuning budget; it is ~30x cheaper per step.
    train_classifier(
        student,
        ctx.data,
        epochs=2 * max(ctx.epochs, 3),
        batch_size=64,
        learning_rate=3e-3,
        callbacks=[teacher],
    )
    return TechniqueResult(
        student, note=f"{student.count_params():,}-param student, teacher = float CNN"
    )


TECHNIQUES = [Technique("distilled small CNN", _distilled_student, order=60)]
