"""Checks for the parts of tfcompress that need the TensorFlow backend."""

from __future__ import annotations

import keras

__all__ = ["require_tensorflow_backend"]


def require_tensorflow_backend(feature: str) -> None:
    """Raises RuntimeError unless Keras runs on TensorFlow.

    Args:
        feature: What needs TensorFlow, for the message (e.g. "TFLite export").
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"{feature} needs the TensorFlow backend, but Keras is running on {backend!r}. "
            "Set KERAS_BACKEND=tensorflow before importing keras to use it; layers, "
            "quantizers, schedules and callbacks work on every backend."
        )
