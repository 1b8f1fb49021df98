"""Flip ratio: how many binary weights change sign, the convergence signal of binary nets."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

__all__ = ["FlipRatio"]


def _binary_kernels(model: keras.Model) -> list:
    kernels = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if getattr(layer, "pack_kind", None) is not None and hasattr(layer, "_latent_kernel"):
            kernels.append((layer.name, layer))
    return kernels


@keras.saving.register_keras_serializable(package="tfcompress")
class FlipRatio(keras.callbacks.Callback):
    """Logs the fraction of binarized weights whose sign changed.

    Every ``frequency`` batches (and at each epoch end) it compares the
    values (-1/0/+1) of every binary/ternary layer's quantized kernel with
    the previous snapshot; ``flip_ratio`` is the number of changes in the
    epoch divided by the number of weights (with batch snapshots a weight
    that flips twice counts twice). It goes into the epoch logs, so it shows
    in ``History``. A binary net has converged when
    its flip ratio stays near zero.

    Args:
        frequency: ``"epoch"`` or a number of batches between snapshots.
            Each snapshot copies the kernels to the host: keep it coarse.
        per_layer: Also log ``flip_ratio/<layer>`` per layer.

    Raises:
        ValueError: For a bad ``frequency``.

    Example:
        >>> flips = FlipRatio()
        >>> model.fit(x, y, epochs=5, callbacks=[flips])
        >>> flips.history  # one float per epoch

    References:
        Helwegen et al., "Latent Weights Do Not Exist", NeurIPS 2019.
    """

    def __init__(self, frequency: int | str = "epoch", per_layer: bool = False) -> None:
        super().__init__()
        if frequency != "epoch" and not (
            isinstance(frequency, int) and not isinstance(frequency, bool) and frequency > 0
        ):
            raise ValueError(f"frequency must be 'epoch' or an int > 0, got {frequency!r}")
        self.frequency = frequency
        self.per_layer = per_layer
        self.history: list[float] = []
        self._previous: dict[str, np.ndarray] = {}
        self._flipped: dict[str, int] = {}
        self._seen = 0

    def _snapshot(self) -> dict[str, np.ndarray]:
        return {
            name: np.sign(layer.quantized_kernel()).astype(np.int8)
            for name, layer in _binary_kernels(self.model)
        }

    def _accumulate(self) -> None:
        current = self._snapshot()
        for name, signs in current.items():
            before = self._previous.get(name)
            if before is not None:
                self._flipped[name] = self._flipped.get(name, 0) + int(np.sum(before != signs))
        self._previous = current

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if not _binary_kernels(self.model):
            raise ValueError(f"model {self.model.name!r} has no binary or ternary layers")
        self._previous = self._snapshot()
        self.history = []

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.frequency != "epoch" and (batch + 1) % self.frequency == 0:
            self._accumulate()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._flipped = {}

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._accumulate()
        sizes = {name: v.size for name, v in self._previous.items()}
        total = sum(sizes.values())
        ratio = sum(self._flipped.values()) / total if total else 0.0
        self.history.append(ratio)
        if logs is not None:
            logs["flip_ratio"] = ratio
            if self.per_layer:
                for name, size in sizes.items():
                    logs[f"flip_ratio/{name}"] = self._flipped.get(name, 0) / size

    def get_config(self) -> dict[str, Any]:
        return {"frequency": self.frequency, "per_layer": self.per_layer}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FlipRatio:
        # keras.callbacks.Callback has no from_config; without it a config cannot rebuild one.
        return cls(**config)
