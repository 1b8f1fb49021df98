"""``DynamicSparseTraining``: train sparse from the start, moving connections (RigL)."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from tfcompress.pruning.callbacks import gradient_batch, validate_data
from tfcompress.pruning.masking import MaskedTraining, deserialize_layers, serialize_layers
from tfcompress.pruning.masks import erk_sparsities, rigl_update, validate_sparsity
from tfcompress.pruning.prunable import LayerSelector

__all__ = ["DynamicSparseTraining"]


@keras.saving.register_keras_serializable(package="tfcompress")
class DynamicSparseTraining(MaskedTraining):
    """Sparse training at a fixed sparsity that drops and regrows connections (RigL).

    At the first step every selected weight gets a random mask at its
    sparsity (``"uniform"``: the same for every layer; ``"erk"``:
    Erdos-Renyi-Kernel, denser small layers, same overall sparsity). Every
    ``update_frequency`` steps until ``end_step`` each layer drops the
    ``f(t) * active`` smallest-magnitude active weights and regrows as many
    inactive ones with the largest loss-gradient magnitude (grown weights
    start at zero); ``f`` decays from ``drop_fraction`` to 0 on a cosine.
    The number of non-zeros never changes. Masks are enforced inside the
    compiled step like :class:`GradualPruning`'s, and are recovered from the
    weights' zeros on resume.

    Args:
        sparsity: Overall fraction of zeros, in [0, 1).
        distribution: ``"uniform"`` or ``"erk"``.
        update_frequency: Steps between drop/regrow updates.
        drop_fraction: Initial fraction of active weights moved per update.
        end_step: Last update step; None: three quarters of the fit's steps.
        data: ``(x, y)`` examples whose loss gradient ranks regrowth (required;
            not part of the config).
        layers: Which layers: None (all prunable), names, classes or a predicate.
        seed: Seed of the initial random masks.
        verbose: 1 prints the sparsity at each epoch end.

    Raises:
        ValueError: For a sparsity outside [0, 1), an unknown distribution,
            ``update_frequency < 1``, ``drop_fraction`` outside (0, 1],
            ``end_step < 1``; at the start of ``fit``, missing ``data`` (set
            it after ``from_config``: ``callback.data = (x, y)``).

    Example:
        >>> rigl = tfc.callbacks.DynamicSparseTraining(
        ...     0.9, distribution="erk", update_frequency=50, data=(x[:512], y[:512]))
        >>> model.fit(x, y, epochs=10, callbacks=[rigl])

    References:
        Evci, Gale, Menick, Castro, Elsen. "Rigging the Lottery: Making All
        Tickets Winners", ICML 2020.
    """

    def __init__(
        self,
        sparsity: float,
        distribution: str = "erk",
        update_frequency: int = 100,
        drop_fraction: float = 0.3,
        end_step: int | None = None,
        data: Any = None,
        layers: LayerSelector = None,
        seed: int = 0,
        verbose: int = 0,
    ):
        super().__init__(layers=layers, verbose=verbose)
        self.sparsity = validate_sparsity(sparsity)
        if distribution not in ("uniform", "erk"):
            raise ValueError(f"distribution must be 'uniform' or 'erk', got {distribution!r}")
        if not isinstance(update_frequency, int) or update_frequency < 1:
            raise ValueError(f"update_frequency must be an integer >= 1, got {update_frequency!r}")
        if not 0.0 < float(drop_fraction) <= 1.0:
            raise ValueError(f"drop_fraction must be in (0, 1], got {drop_fraction!r}")
        if end_step is not None and (not isinstance(end_step, int) or end_step < 1):
            raise ValueError(f"end_step must be an integer >= 1, got {end_step!r}")
        self.distribution = distribution
        self.update_frequency = update_frequency
        self.drop_fraction = float(drop_fraction)
        self.end_step = end_step
        self.seed = seed
        self.data = validate_data(data, False, "DynamicSparseTraining")
        self._end = end_step
        self.layer_sparsities: list[float] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        validate_data(self.data, True, "DynamicSparseTraining")
        if self.end_step is None:
            epochs, steps = self.params.get("epochs"), self.params.get("steps")
            if not epochs or not steps:
                raise ValueError("end_step=None needs a known number of steps; pass end_step")
            self._end = max(1, round(0.75 * epochs * steps))
        super().on_train_begin(logs)
        shapes = [tuple(t.variable.shape) for t in self.targets]
        if self.distribution == "erk":
            self.layer_sparsities = erk_sparsities(shapes, self.sparsity)
        else:
            self.layer_sparsities = [self.sparsity] * len(shapes)

    def drop_fraction_at(self, step: int) -> float:
        """Cosine-decayed fraction of active weights to move at ``step``."""
        progress = min(1.0, step / self._end)
        return self.drop_fraction / 2 * (1 + math.cos(math.pi * progress))

    def random_masks(self) -> list[np.ndarray]:
        masks = []
        for index, (target, sparsity) in enumerate(zip(self.targets, self.layer_sparsities)):
            shape = tuple(target.variable.shape)
            size = math.prod(shape)
            rng = np.random.default_rng([self.seed, index])
            flat = np.ones(size, np.float32)
            flat[rng.permutation(size)[: round(sparsity * size)]] = 0.0
            masks.append(flat.reshape(shape))
        return masks

    def initial_masks(self, step: int) -> list[np.ndarray] | None:
        if step == 0:
            return self.random_masks()
        derived = self.zero_masks()
        achieved = 1.0 - sum(m.sum() for m in derived) / sum(m.size for m in derived)
        # A dense model at a late step has no sparse state to resume: start one.
        return self.random_masks() if achieved + 0.01 < self.sparsity else derived

    def on_step(self, step: int) -> None:
        if step == 0 or step >= self._end or step % self.update_frequency:
            return
        from tfcompress.core.gradients import loss_gradients

        x, y = gradient_batch(self.data, step // self.update_frequency)
        variables = [t.variable for t in self.targets]
        self.sync_state()
        gradients = loss_gradients(self.model, variables, x, y)
        fraction = self.drop_fraction_at(step)
        masks = [
            rigl_update(keras.ops.convert_to_numpy(mask), weight, grad, fraction)
            for mask, weight, grad in zip(self.masks, self.weight_values(), gradients)
        ]
        self.set_masks(masks)

    def get_config(self) -> dict:
        return {
            "sparsity": self.sparsity,
            "distribution": self.distribution,
            "update_frequency": self.update_frequency,
            "drop_fraction": self.drop_fraction,
            "end_step": self.end_step,
            "layers": serialize_layers(self.layers),
            "seed": self.seed,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config: dict) -> DynamicSparseTraining:
        config = dict(config)
        config["layers"] = deserialize_layers(config.get("layers"))
        return cls(**config)
