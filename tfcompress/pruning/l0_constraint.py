"""``L0MacsConstraint``: trains L0 gates to a MACs budget (see :mod:`tfcompress.pruning.l0`)."""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np

from tfcompress.core.backend_state import sync_state
from tfcompress.pruning.hard_concrete import HardConcreteGate
from tfcompress.pruning.l0_graph import GateCosts, gated_costs, validate_target_macs
from tfcompress.pruning.validation import check_positive

__all__ = ["L0MacsConstraint"]


def _learning_rate(model: keras.Model) -> float:
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError("L0MacsConstraint: compile the gated model before fit")
    rate = optimizer.learning_rate
    if callable(rate) and not isinstance(rate, keras.Variable):
        rate = rate(optimizer.iterations)
    value = float(keras.ops.convert_to_numpy(rate))
    if not value > 0:
        raise ValueError(f"L0MacsConstraint: the optimizer's learning rate is {value}")
    return value


@keras.saving.register_keras_serializable(package="tfcompress")
class L0MacsConstraint(keras.callbacks.Callback):
    """Trains a gated model's L0 gates to a MACs budget by a Lagrange multiplier.

    Args:
        target_macs: The budget, a fraction of the dense model's MACs in (0, 1].
        gate_step: How far a gate's ``log_alpha`` may move per train step. At
            the start of ``fit`` each gate's ``rate`` is set to ``gate_step /
            learning rate``, which gives that speed under an adaptive optimizer
            (Adam, AdamW, RMSprop: a step of about the learning rate per
            variable). A gate turns off about ``5.4 / gate_step`` steps after it
            starts falling (from ``log_alpha`` 3 to below -2.4).
        multiplier_rate: Step of the multiplier's integral part per train step
            (its speed, not a penalty weight: the multiplier finds its own size).
        proportional: Gain of the multiplier's proportional part.
        ramp: The fraction of the fit's steps over which the target descends
            from 1 to ``target_macs`` (0: from the first step).
        verbose: 1 prints the expected MACs fraction and the multiplier per epoch.

    The expected MACs fraction, the fraction the inference gates give and the
    multiplier are added to the epoch logs as ``l0_macs_fraction``,
    ``l0_inference_macs_fraction`` and ``l0_multiplier`` (list this callback
    before ``keras.callbacks.TensorBoard`` to have them plotted).

    Resumable: the multiplier's integral, the step and the gates' speed live in
    the gates' variables (with their noise state), and the callback reads them
    at the first step of ``fit``, so a run resumed with
    ``keras.callbacks.BackupAndRestore`` (listed before or after it) ends
    bit-for-bit where an uninterrupted one does, and a later ``fit`` of the
    same gated model continues the run.

    Raises:
        ValueError: For a target outside (0, 1]; at ``fit``, for a model
            without gates or a target below what one channel per gated layer
            costs.

    Example:
        >>> gated = tfc.pruning.add_l0_gates(model)
        >>> gated.compile("adam", "sparse_categorical_crossentropy")
        >>> gated.fit(x, y, epochs=3, callbacks=[L0MacsConstraint(target_macs=0.5)])
        >>> pruned, report = tfc.pruning.remove_l0_gates(gated, 0.5, batchnorm_data=x[:512])

    Reference: Louizos, Welling & Kingma, ICLR 2018 (hard-concrete gates);
    Gallego-Posada et al., NeurIPS 2022 (the constraint instead of a penalty).
    """

    def __init__(
        self,
        target_macs: float,
        gate_step: float = 0.3,
        multiplier_rate: float = 0.5,
        ramp: float = 0.5,
        proportional: float = 50.0,
        verbose: int = 0,
    ):
        super().__init__()
        self.target_macs = validate_target_macs(target_macs)
        self.gate_step = check_positive("gate_step", gate_step)
        self.multiplier_rate = check_positive("multiplier_rate", multiplier_rate)
        if isinstance(ramp, bool) or not isinstance(ramp, (int, float)) or not 0 <= ramp <= 1:
            raise ValueError(f"ramp must be a fraction in [0, 1], received ramp={ramp!r}")
        self.ramp = float(ramp)
        if isinstance(proportional, bool) or not (
            isinstance(proportional, (int, float)) and proportional >= 0
        ):
            raise ValueError(
                f"proportional must be a number >= 0, received proportional={proportional!r}"
            )
        self.proportional = float(proportional)
        self.integral = 0.0
        self.step = 0
        self._ramp_steps = 0
        self._pending = False
        self.verbose = verbose
        self.gates: list[HardConcreteGate] = []
        self.costs: GateCosts | None = None
        self.macs_fraction = 1.0
        self.inference_fraction = 1.0
        self.multiplier = 0.0

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        gates, costs = gated_costs(model, self.target_macs, "L0MacsConstraint")
        self.gates, self.costs = gates, costs

    def _kept(self) -> np.ndarray:
        return np.array([gate.open_probability().mean() for gate in self.gates])

    def _update(self, ascend: bool) -> None:
        sync_state(self.model)
        kept = self._kept()
        self.macs_fraction = self.costs.fraction(kept)
        if ascend:
            self.step += 1
        violation = self.macs_fraction - self.current_target()
        if ascend:
            self.integral = max(0.0, self.integral + self.multiplier_rate * violation)
        self.multiplier = max(0.0, self.integral + self.proportional * violation)
        weights = self.multiplier * self.costs.gradient(kept)
        for gate, weight in zip(self.gates, weights):
            gate.cost_weight.assign(float(weight))
            gate.multiplier.assign(self.integral)
            gate.constraint_step.assign(float(self.step))

    def current_target(self) -> float:
        """The target at this step: 1 -> ``target_macs`` linearly over the ramp."""
        if self._ramp_steps <= 0 or self.step >= self._ramp_steps:
            return self.target_macs
        return self.target_macs + (1.0 - self.target_macs) * (1.0 - self.step / self._ramp_steps)

    def on_train_begin(self, logs: Any = None) -> None:
        params = self.params or {}
        total = (params.get("epochs") or 0) * (params.get("steps") or 0)
        self._ramp_steps = round(self.ramp * total) if total else 0
        if self.ramp and not total:
            warnings.warn(
                "L0MacsConstraint: the fit's number of steps is unknown (a generator or a "
                "dataset of unknown length), so the target is demanded from the first step "
                "(no ramp); the gates may overshoot it. Give fit steps_per_epoch.",
                stacklevel=2,
            )
        self._pending = True

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        # Read the state at the first step, after every on_train_begin (BackupAndRestore
        # restores the weights there, listed before or after this callback).
        if self._pending:
            self._pending = False
            self._start()

    def _start(self) -> None:
        sync_state(self.model)
        self.integral = float(keras.ops.convert_to_numpy(self.gates[0].multiplier))
        self.step = int(keras.ops.convert_to_numpy(self.gates[0].constraint_step))
        if self.step == 0:  # a fresh run; a resumed one keeps the gates' speed it had
            rate = self.gate_step / _learning_rate(self.model)
            for gate in self.gates:
                gate.set_rate(rate)
        self._update(ascend=False)

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self._update(ascend=True)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        # per epoch, not per step: only the logs read it
        on = np.array([(gate.deterministic_gates() > 0).mean() for gate in self.gates])
        self.inference_fraction = self.costs.fraction(on)
        if logs is not None:
            logs["l0_macs_fraction"] = self.macs_fraction
            logs["l0_inference_macs_fraction"] = self.inference_fraction
            logs["l0_multiplier"] = self.multiplier
        if self.verbose:
            print(
                f"L0MacsConstraint: expected MACs {self.macs_fraction:.3f} of dense "
                f"(target {self.target_macs}), {self.inference_fraction:.3f} with the inference "
                f"gates, multiplier {self.multiplier:.4g}"
            )

    def get_config(self) -> dict:
        return {
            "target_macs": self.target_macs,
            "gate_step": self.gate_step,
            "multiplier_rate": self.multiplier_rate,
            "ramp": self.ramp,
            "proportional": self.proportional,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config: dict) -> L0MacsConstraint:
        return cls(**config)
