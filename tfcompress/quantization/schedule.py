"""Quantizers whose behaviour follows the training progress, and the callback that drives them.

Some quantizers change over a run: IR-Net's error-decay estimator sharpens its
gradient, the mirror-descent relaxation (``md_tanh``) hardens ``tanh(beta x)``
towards the sign. The progress ``p`` in ``[0, 1]`` is quantizer state on the
layer like every tfcompress quantizer's: :class:`ProgressQuantizer`'s ``build``
creates a non-trainable float32 ``<role>_progress`` variable (0 at start), and
:class:`QuantizerSchedule` sets it before every batch from the optimizer's step
count. So the compiled train step reads it without retracing, on TensorFlow and
JAX; it is saved with the layer, and a run resumed from a checkpoint continues
where it was.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from tfcompress.quantization.base import scalar_state
from tfcompress.quantization.binary import BinaryQuantizer

__all__ = ["ProgressQuantizer", "ProgressState", "QuantizerSchedule", "progress_variables"]


class ProgressState:
    """Mixin of the quantizers driven by :class:`QuantizerSchedule`: the progress state."""

    stateful = True

    def build(self, layer, shape, name):
        return {"progress": scalar_state(layer, f"{name}_progress")}

    @staticmethod
    def _progress(state):
        return ops.convert_to_tensor(state["progress"])


class ProgressQuantizer(ProgressState, BinaryQuantizer):
    """Base of the 1-bit quantizers driven by :class:`QuantizerSchedule`."""


def progress_variables(model: keras.layers.Layer) -> list[keras.Variable]:
    """The ``progress`` state variables of every progress-scheduled quantizer in ``model``."""
    found = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for role, state in (getattr(layer, "quantizer_state", None) or {}).items():
            quantizer = getattr(layer, f"{role}_quantizer", None)
            if isinstance(quantizer, ProgressState) and "progress" in state:
                found.append(state["progress"])
    return found


@keras.saving.register_keras_serializable(package="tfcompress")
class QuantizerSchedule(keras.callbacks.Callback):
    """Sets the training progress of every progress-scheduled quantizer before each batch.

    Before each training batch, ``progress = min(step / (total_steps - 1), 1)``
    with ``step`` the optimizer's iteration count, so the first step sees
    ``p = 0`` and step ``total_steps - 1`` (the last of a run of
    ``total_steps``) sees ``p = 1``. It is assigned to the ``progress`` variable
    of every IR-Net quantizer (``irnet``, ``irnet_sign``: EDE temperature from
    ``t_min`` to ``t_max``) and mirror-descent quantizer (``md_tanh``,
    ``MirrorTanhQuantizer``: ``beta`` from ``beta_min`` to ``beta_max``) in the
    model; each keeps its own range.

    Resumable: the step comes from the optimizer, which checkpoints restore
    (``keras.callbacks.BackupAndRestore``), and the progress variables are
    saved with their layers. A later ``fit`` continues the count (progress
    stays 1 once ``total_steps`` is passed).

    Args:
        total_steps: Training steps over which the progress goes from 0 to 1
            (>= 1). None: the ``epochs * steps`` of the ``fit`` call (which
            must know its steps per epoch).

    Raises:
        ValueError: For a bad ``total_steps``; at the start of training, if
            the model has no such quantizer or ``total_steps`` is None and
            ``fit`` does not know its steps per epoch.

    Example:
        >>> model = tfc.models.digits_binary_cnn(kernel_quantizer="md_tanh")
        >>> model.fit(x, y, epochs=15, callbacks=[tfc.callbacks.QuantizerSchedule()])
    """

    def __init__(self, total_steps: int | None = None) -> None:
        super().__init__()
        if total_steps is not None and (
            isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1
        ):
            raise ValueError(f"total_steps must be None or an integer >= 1, got {total_steps!r}")
        self.total_steps = total_steps
        self._variables: list[keras.Variable] = []
        self._total = total_steps
        self.progress = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        variables = progress_variables(self.model)
        if not variables:
            raise ValueError(
                f"model {self.model.name!r} has no IR-Net quantizer (kernel_quantizer='irnet' "
                "or input_quantizer='irnet_sign') or mirror-descent quantizer ('md_tanh') for "
                f"{type(self).__name__} to drive"
            )
        total = self.total_steps
        if total is None:
            epochs, steps = self.params.get("epochs"), self.params.get("steps")
            if not epochs or not steps:
                raise ValueError(
                    f"{type(self).__name__}(total_steps=None) needs fit to know its steps per "
                    f"epoch, got epochs={epochs!r}, steps={steps!r}; pass total_steps"
                )
            total = int(epochs) * int(steps)
        self._variables, self._total = variables, total

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # Reading self.model first also syncs the JAX trainer's state, so the
        # assignment below reaches the next train step.
        step = int(ops.convert_to_numpy(self.model.optimizer.iterations))
        self.progress = min(step / max(self._total - 1, 1), 1.0)
        for variable in self._variables:
            variable.assign(self.progress)

    def get_config(self) -> dict[str, Any]:
        return {"total_steps": self.total_steps}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> QuantizerSchedule:
        # keras.callbacks.Callback has no from_config; without it a config cannot rebuild one.
        return cls(**config)
