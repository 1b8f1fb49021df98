"""``DynamicSparseTraining``: train sparse from the start, moving connections (RigL)."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from tfcompress.pruning.callbacks import _gradient_batch, validate_data
from tfcompress.pruning.masking import MaskedTraining, deserialize_layers, serialize_layers
from tfcompress.pruning.masks import erk_sparsities, rigl_update
from tfcompress.pruning.prunable import LayerSelector
from tfcompress.pruning.schedules import ConstantSparsity
from tfcompress.pruning.validation import check_fraction, check_int, check_positive

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
    The number of non-zeros never changes. Steps are counted from the
    callback's own start; its update steps come from a
    ``ConstantSparsity(sparsity, 0, end_step, frequency=update_frequency)``
    schedule. Masks are enforced inside the compiled step and kept with the
    model like :class:`GradualPruning`'s, and resume the same way.

    Args:
        sparsity: Overall fraction of zeros, in [0, 1).
        distribution: ``"uniform"`` or ``"erk"``.
        update_frequency: Steps between drop/regrow updates.
        drop_fraction: Initial fraction of active weights moved per update.
        end_step: Drop/regrow stops here (no update at it); None: three quarters
            of the run's steps.
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
        self.sparsity = check_fraction("sparsity", sparsity)
        if distribution not in ("uniform", "erk"):
            raise ValueError(f"distribution must be 'uniform' or 'erk', got {distribution!r}")
        self.update_frequency = check_int("update_frequency", update_frequency, minimum=1)
        self.drop_fraction = check_positive("drop_fraction", drop_fraction, upper=1.0)
        self.end_step = check_int("end_step", end_step, minimum=1, none_ok=True)
        self.distribution = distribution
        self.seed = check_int("seed", seed, minimum=0)
        self.data = validate_data(data, False, "DynamicSparseTraining")
        # Drop/regrow every update_frequency steps from step 0 (the random start)
        # until end_step: the schedule says when, for this callback and for
        # LearningRateRewinding alike.
        self.sparsity_schedule = ConstantSparsity(
            self.sparsity, 0, self.end_step, frequency=self.update_frequency
        )
        self._active: ConstantSparsity = self.sparsity_schedule
        self.layer_sparsities: list[float] = []

    def validate_fit(self) -> None:
        validate_data(self.data, True, "DynamicSparseTraining")

    def resolve(self, total_steps: int | None) -> None:
        if self.end_step is None and total_steps is None:
            raise ValueError("end_step=None needs a known number of steps; pass end_step")
        self._active = self.sparsity_schedule.resolved(total_steps or 0)

    def schedule_update_steps(self, total_steps: int) -> tuple[int, ...]:
        return self._active.update_steps(total_steps)

    def start_run(self) -> None:
        shapes = [tuple(t.variable.shape) for t in self.targets]
        if self.distribution == "erk":
            self.layer_sparsities = erk_sparsities(shapes, self.sparsity)
        else:
            self.layer_sparsities = [self.sparsity] * len(shapes)

    def drop_fraction_at(self, step: int) -> float:
        """Cosine-decayed fraction of active weights to move at ``step``."""
        progress = min(1.0, step / self._active.end_step)
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

    def on_step(self, step: int) -> None:
        if not self._active.is_update_step(step):
            return
        if step == 0:  # the run's start: random masks at the layers' sparsities
            if not self.layer_sparsities:
                self.start_run()
            self.set_masks(self.random_masks())
            return
        from tfcompress.core.gradients import loss_gradients

        x, y = _gradient_batch(self.data, step // self.update_frequency)
        variables = [t.variable for t in self.targets]
        self.sync_state()
        gradients = loss_gradients(self.model, variables, x, y)
        fraction = self.drop_fraction_at(step)
        masks = [
            rigl_update(mask, weight, grad, fraction)
            for mask, weight, grad in zip(self.mask_values(), self.weight_values(), gradients)
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
