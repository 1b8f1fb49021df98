"""Reading and assigning model state from a callback on every Keras backend.

The JAX trainer keeps the model's state outside its variables during ``fit``
(it empties them while an epoch runs and puts the values back at the epoch
end). A callback that reads or assigns a variable mid-epoch must first call
``model.jax_state_sync()``, the trainer's public hook for this: it writes the
current state into the variables and makes the next step read them again, so
assignments take effect. On TensorFlow both helpers cost nothing.
"""

from __future__ import annotations

import keras

__all__ = ["StepTracker", "is_jax", "sync_state"]


def is_jax() -> bool:
    return keras.backend.backend() == "jax"


def sync_state(model: keras.Model) -> None:
    """Makes the variables hold the current training state (no-op off JAX)."""
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None and is_jax():
        sync()


class StepTracker:
    """``optimizer.iterations`` before each batch, without a JAX sync per batch.

    On JAX the step is read once per epoch (where the trainer has synced
    anyway) and counted from the batch index after that; call :meth:`reset`
    in ``on_epoch_begin``.
    """

    def __init__(self) -> None:
        self._epoch_first: int | None = None

    def reset(self) -> None:
        self._epoch_first = None

    @staticmethod
    def read(model: keras.Model) -> int:
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None:
            raise ValueError(f"{type(model).__name__} needs a compiled model (an optimizer)")
        sync_state(model)
        return int(keras.ops.convert_to_numpy(optimizer.iterations))

    def step(self, model: keras.Model, batch: int) -> int:
        if not is_jax():
            return self.read(model)
        if self._epoch_first is None:
            self._epoch_first = self.read(model) - batch
        return self._epoch_first + batch
