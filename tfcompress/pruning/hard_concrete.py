"""``HardConcreteGate``: a learned on/off gate per channel (L0 regularization).

Louizos, Welling & Kingma, "Learning Sparse Neural Networks through L0
Regularization" (ICLR 2018). Each channel ``c`` of the last axis is multiplied
by a gate ``z_c`` in ``[0, 1]`` drawn from a *hard concrete* distribution with
a learned location ``log_alpha_c``: in training, with ``u ~ U(0, 1)``,

    s = sigmoid((log u - log(1 - u) + log_alpha) / beta)
    z = min(1, max(0, s * (zeta - gamma) + gamma))

(``beta`` the temperature, ``(gamma, zeta) = (-0.1, 1.1)`` the stretch that puts
probability mass on exactly 0 and exactly 1), and at inference the
deterministic ``z = min(1, max(0, sigmoid(log_alpha) * (zeta - gamma) + gamma))``.
The probability that a gate is non-zero has a closed form,

    P(z_c != 0) = sigmoid(log_alpha_c - beta * log(-gamma / zeta)),

differentiable in ``log_alpha``, so an expected cost (the L0 norm, or MACs as in
:class:`tfcompress.pruning.l0_constraint.L0MacsConstraint`) can be trained with the task
loss. The gate adds ``cost_weight * mean_c P(z_c != 0)`` to the model's losses
in training; ``cost_weight`` is a non-trainable variable that a constraint
callback sets (0 on its own: the gate then only learns from the task loss).

Adam moves a variable by about its learning rate per step, and a gate must move
by several units within a fine-tune of tens of steps, so the layer stores
``log_alpha / rate`` (``rate`` default 100: at a learning rate of 1e-3 a gate's
``log_alpha`` moves up to ~0.1 per step). ``rate`` is a non-trainable variable
(its starting value in the config): :class:`~tfcompress.pruning.l0_constraint.L0MacsConstraint`
sets it from the optimizer's learning rate so that the gates move at a chosen
speed whatever the learning rate.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

from tfcompress.pruning.validation import check_positive

__all__ = ["HardConcreteGate"]

_EPSILON = 1e-6


@keras.saving.register_keras_serializable(package="tfcompress")
class HardConcreteGate(keras.layers.Layer):
    """Multiplies each channel (last axis) by a learned hard-concrete gate in ``[0, 1]``.

    Args:
        initial_log_alpha: Starting ``log_alpha`` of every gate. The default 3.0
            opens every gate at inference (``z = 1`` needs ``log_alpha >= 2.4``)
            and keeps it at 1 in about 80% of training draws: fine-tuning starts
            from the trained model.
        temperature: ``beta`` (2/3 in the paper).
        stretch: ``(gamma, zeta)`` with ``gamma < 0 < 1 < zeta``.
        rate: ``log_alpha`` is stored divided by this (a learning-rate
            multiplier for the gates; see the module docstring): the starting
            value of the ``rate`` variable.
        seed: Seed of the training noise.
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ...).

    Raises:
        ValueError: For a non-positive temperature or rate, or a stretch outside
            ``gamma < 0 < 1 < zeta``.

    Example:
        >>> gate = HardConcreteGate(name="conv1_gate")
        >>> y = gate(np.ones((2, 8, 8, 16), "float32"))  # inference: all gates open
        >>> float(np.min(y)), gate.open_probability().shape
        (1.0, (16,))
    """

    def __init__(
        self,
        initial_log_alpha: float = 3.0,
        temperature: float = 2.0 / 3.0,
        stretch: tuple[float, float] = (-0.1, 1.1),
        rate: float = 100.0,
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if isinstance(initial_log_alpha, bool) or not isinstance(initial_log_alpha, (int, float)):
            raise ValueError(
                f"initial_log_alpha must be a number, received initial_log_alpha="
                f"{initial_log_alpha!r}"
            )
        self.initial_log_alpha = float(initial_log_alpha)
        self.temperature = check_positive("temperature", temperature)
        self.rate = check_positive("rate", rate)
        try:
            gamma, zeta = (float(v) for v in stretch)
        except (TypeError, ValueError):
            gamma, zeta = math.nan, math.nan
        if not (gamma < 0 < 1 < zeta):
            raise ValueError(
                f"stretch must be (gamma, zeta) with gamma < 0 < 1 < zeta, received "
                f"stretch={stretch!r}"
            )
        self.stretch = (gamma, zeta)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape: Any) -> None:
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{self.name}: the last axis (channels) must be known")
        self.gate_logit = self.add_weight(
            shape=(int(channels),),
            initializer=keras.initializers.Constant(self.initial_log_alpha / self.rate),
            name="gate_logit",
        )
        self.rate_variable = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.rate),
            trainable=False,
            name="rate",
        )
        # Set by a constraint callback: d(penalty)/d(mean open probability) of this gate.
        self.cost_weight = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="cost_weight"
        )
        # The constraint's Lagrange multiplier and step, kept here so a resumed fit continues.
        self.multiplier = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="multiplier"
        )
        self.constraint_step = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="constraint_step"
        )

    def log_alpha(self) -> Any:
        return self.gate_logit * self.rate_variable

    def set_rate(self, rate: float) -> None:
        """Changes the gates' speed, keeping ``log_alpha`` (the gates) as they are."""
        log_alpha = self.log_alpha_values()
        self.rate_variable.assign(float(rate))
        self.gate_logit.assign((log_alpha / float(rate)).astype("float32"))

    def _open(self, log_alpha: Any) -> Any:
        gamma, zeta = self.stretch
        return ops.sigmoid(log_alpha - self.temperature * math.log(-gamma / zeta))

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        gamma, zeta = self.stretch
        log_alpha = ops.cast(self.log_alpha(), "float32")
        if training:
            u = keras.random.uniform(
                ops.shape(log_alpha), _EPSILON, 1.0 - _EPSILON, seed=self.seed_generator
            )
            s = ops.sigmoid((ops.log(u) - ops.log(1.0 - u) + log_alpha) / self.temperature)
            self.add_loss(ops.cast(self.cost_weight, "float32") * ops.mean(self._open(log_alpha)))
        else:
            s = ops.sigmoid(log_alpha)
        z = ops.clip(s * (zeta - gamma) + gamma, 0.0, 1.0)
        return inputs * ops.cast(z, inputs.dtype)

    # --- NumPy views for callbacks and the final conversion
    def log_alpha_values(self) -> np.ndarray:
        logit = np.asarray(keras.ops.convert_to_numpy(self.gate_logit), np.float64)
        return logit * float(keras.ops.convert_to_numpy(self.rate_variable))

    def open_probability(self) -> np.ndarray:
        """``P(z_c != 0)`` per channel (NumPy)."""
        gamma, zeta = self.stretch
        shifted = self.log_alpha_values() - self.temperature * math.log(-gamma / zeta)
        return 1.0 / (1.0 + np.exp(-shifted))

    def deterministic_gates(self) -> np.ndarray:
        """The inference gates ``z_c`` (NumPy); a channel with ``z_c == 0`` is off."""
        gamma, zeta = self.stretch
        s = 1.0 / (1.0 + np.exp(-self.log_alpha_values()))
        return np.clip(s * (zeta - gamma) + gamma, 0.0, 1.0)

    # --- saved with the weights: the noise generator's state too, so a run resumed from a
    # checkpoint (BackupAndRestore) draws the same gates as an uninterrupted one
    def save_own_variables(self, store: Any) -> None:
        super().save_own_variables(store)
        store["noise"] = np.asarray(keras.ops.convert_to_numpy(self.seed_generator.state))

    def load_own_variables(self, store: Any) -> None:
        names = list(store.keys())  # Keras H5 entries have keys(), not iteration
        super().load_own_variables({key: store[key] for key in names if key != "noise"})
        if "noise" in names:
            self.seed_generator.state.assign(np.asarray(store["noise"]))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "initial_log_alpha": self.initial_log_alpha,
                "temperature": self.temperature,
                "stretch": list(self.stretch),
                "rate": self.rate,
                "seed": self.seed,
            }
        )
        return config
