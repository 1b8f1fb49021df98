"""Config values that are either a plain number or a serializable Keras object.

A learning rate, a temperature or a loss weight may be given as a float or as a
``keras.optimizers.schedules.LearningRateSchedule``; ``get_config`` must store
either one so that ``from_config`` (and ``.keras`` files) rebuild the same thing.
"""

from __future__ import annotations

from typing import Any

import keras

__all__ = ["deserialize_schedule", "serialize_schedule"]


def serialize_schedule(schedule: Any) -> Any:
    """A float stays a float; anything else is stored with ``keras.saving``.

    Example:
        >>> serialize_schedule(0.1)
        0.1
    """
    if isinstance(schedule, (int, float)):
        return float(schedule)
    return keras.saving.serialize_keras_object(schedule)


def deserialize_schedule(config: Any) -> Any:
    """The inverse of :func:`serialize_schedule`."""
    if isinstance(config, (int, float)):
        return float(config)
    return keras.saving.deserialize_keras_object(config)
