"""How much a model loses when one layer's weights are replaced: the allocation's error terms.

The budget solver needs, for every layer ``l`` and option ``k``, an error
``e[l][k]`` that adds up across layers. Three measures, from cheap to
principled:

- ``"output"``: the relative squared change of the model's outputs on the
  calibration inputs, ``||f_lk(x) - f(x)||^2 / ||f(x)||^2``, when layer ``l``
  alone takes option ``k`` (no labels needed);
- ``"loss"``: the increase of the task loss on calibration inputs and targets
  when layer ``l`` alone takes option ``k``;
- ``"hessian"``: HAWQ-V2's sensitivity (Dong et al. 2020),
  ``Tr(H_l) / n_l * ||W_lk - W_l||^2``, where ``H_l`` is the Hessian of the
  loss with respect to layer ``l``'s ``n_l`` weights and ``W_lk`` are its
  weights under option ``k``. ``Tr(H_l)`` comes from Hutchinson's estimator,
  ``E[v^T H v]`` over Rademacher vectors ``v``, with each Hessian-vector
  product taken as a central difference of loss gradients,
  ``H v ~ (g(w + t v) - g(w - t v)) / (2 t)`` (backend-neutral: only
  gradients are needed).

Measured one layer at a time, the first two are exact for that layer and
additive only to first order (interactions between layers are ignored, as in
HAWQ and SPDY's layer-wise tables).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from tfcompress.core.batchnorm import recalibrated_batchnorm
from tfcompress.core.calibration import CalibrationData
from tfcompress.core.gradients import loss_gradients

__all__ = ["ERROR_MEASURES", "ModelScorer", "hutchinson_trace"]

ERROR_MEASURES = ("output", "loss", "hessian")


class ModelScorer:
    """Scores models on fixed calibration data: output change against a reference, or the loss.

    Forward passes use the model's compiled ``predict_on_batch`` (several times
    faster than eager calls), which reads the variables as they are, so a
    candidate installed in place is scored as it is.

    Args:
        reference: The uncompressed model (its outputs are the ``"output"``
            reference; its score is :attr:`base`).
        calibration: Checked calibration inputs.
        targets: Targets for the inputs (``"loss"``), or None (``"output"``).
        loss: ``loss(y_true, y_pred)``; required with ``targets``.
        batch_size: Examples per forward pass.
        recalibrate: Re-estimate BatchNorm statistics on the calibration
            inputs before scoring a candidate
            (:func:`tfcompress.core.batchnorm.recalibrated_batchnorm`).
    """

    def __init__(
        self,
        reference: keras.Model,
        calibration: CalibrationData,
        targets: np.ndarray | None,
        loss: Callable[[Any, Any], Any] | None,
        batch_size: int,
        recalibrate: bool = False,
    ):
        self.calibration = calibration
        self.targets = None if targets is None else np.asarray(targets)
        self.loss = loss
        self.batch_size = batch_size
        self.recalibrate = recalibrate
        self.measure = "output" if targets is None else "loss"
        self.reference_outputs = self.outputs(reference)
        self.reference_power = max(
            float(np.mean([np.mean(np.square(o)) for o in self.reference_outputs])), 1e-30
        )
        self.base = self._score(self.reference_outputs)

    @property
    def samples(self) -> int:
        """How many calibration examples a score reads."""
        return self.calibration.num_samples

    def outputs(self, model: keras.Model) -> list[np.ndarray]:
        """The model's outputs on the calibration inputs (float64), one array per output."""
        parts = [
            [np.asarray(o, np.float64) for o in keras.tree.flatten(model.predict_on_batch(batch))]
            for batch in self.calibration.input_batches(self.batch_size)
        ]
        return [np.concatenate(column) for column in zip(*parts)]

    def _score(self, outputs: list[np.ndarray]) -> float:
        if self.targets is None:
            change = [np.mean((o - r) ** 2) for o, r in zip(outputs, self.reference_outputs)]
            return float(np.mean(change)) / self.reference_power
        prediction = outputs[0] if len(outputs) == 1 else outputs
        value = self.loss(self.targets, prediction)
        return float(np.mean(keras.ops.convert_to_numpy(value)))

    def score(self, model: keras.Model) -> float:
        """The output error (relative squared change) or the mean loss of ``model``."""
        if not self.recalibrate:
            return self._score(self.outputs(model))
        # Score the change, not the stale BatchNorm statistics after it (a fine-tune
        # re-estimates them within its first steps).
        with recalibrated_batchnorm(model, self.calibration.input_batches(self.batch_size)):
            return self._score(self.outputs(model))

    def increase(self, model: keras.Model) -> float:
        """``score(model)`` minus the reference model's score."""
        return self.score(model) - self.base


def hutchinson_trace(
    model: keras.Model,
    variable: Any,
    x: Any,
    y: Any,
    loss: Callable[[Any, Any], Any],
    samples: int = 8,
    seed: int = 0,
    step: float | None = None,
) -> float:
    """``Tr(H)`` of the loss Hessian with respect to one variable, by Hutchinson's estimator.

    ``Tr(H) = E[v^T H v]`` for Rademacher ``v``; each ``H v`` is the central
    difference of two loss gradients at ``w +- t v`` with
    ``t = 1e-3 * rms(w) + 1e-6`` (unless ``step`` is given). The variable is
    restored exactly afterwards.

    Args:
        model: The model (inference mode is used).
        variable: One of its variables (a kernel).
        x: A batch of inputs.
        y: Its targets.
        loss: ``loss(y_true, y_pred)``.
        samples: Rademacher vectors averaged.
        seed: Seed of the vectors.
        step: The finite-difference step ``t``.

    Returns:
        The trace estimate (a float; can be slightly negative for a flat loss).

    Example:
        >>> hutchinson_trace(model, model.layers[0].kernel, x[:128], y[:128],
        ...                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        3.1
    """
    original = np.asarray(keras.ops.convert_to_numpy(variable), np.float32)
    rng = np.random.default_rng(seed)
    t = float(step) if step is not None else 1e-3 * float(np.sqrt(np.mean(original**2))) + 1e-6
    total = 0.0
    try:
        for _ in range(samples):
            v = rng.choice(np.array([-1.0, 1.0], np.float32), size=original.shape)
            variable.assign(original + t * v)
            (plus,) = loss_gradients(model, [variable], x, y, loss)
            variable.assign(original - t * v)
            (minus,) = loss_gradients(model, [variable], x, y, loss)
            total += float(np.sum(v * (plus - minus)) / (2 * t))
    finally:
        variable.assign(original)
    return total / samples


def swap_errors(
    base: keras.Model,
    layers: Sequence[str],
    options: Sequence[Any],
    install: Callable[[str, Any], Callable[[], None]],
    score: Callable[[keras.Model], float],
    progress: Any = None,
) -> np.ndarray:
    """``errors[l, k] = score(base with layer l under option k) - score(base)``.

    ``install(layer, option)`` changes ``base`` in place and returns a function
    that undoes the change; every change is undone before the next.
    """
    baseline = score(base)
    errors = np.zeros((len(layers), len(options)))
    done = 0
    for i, name in enumerate(layers):
        for k, option in enumerate(options):
            undo = install(name, option)
            try:
                errors[i, k] = score(base) - baseline
            finally:
                undo()
            done += 1
            if progress is not None:
                progress.update(done)
    return errors
