"""Bop: the latent-weight-free optimizer for binary weights (Helwegen et al., 2019)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops

__all__ = ["Bop", "is_binary_variable"]


def is_binary_variable(variable) -> bool:
    """True for the kernels of tfcompress binary layers with a +-1 (unscaled) quantizer.

    The layers mark such kernels when they are built
    (``variable._tfcompress_binary``).
    """
    return bool(getattr(variable, "_tfcompress_binary", False))


@keras.saving.register_keras_serializable(package="tfcompress")
class Bop(keras.optimizers.Optimizer):
    """Binary optimizer: flips binary weights whose gradient momentum is strong and consistent.

    For each binary weight ``w`` (only its sign matters) with gradient ``g``::

        m <- (1 - gamma) * m + gamma * g
        w <- -w   if |m| > threshold and sign(m) == sign(w)

    Every other variable (biases, BatchNorm, float first/last layers) is
    updated by ``fp_optimizer`` (Adam by default), so one optimizer trains
    the whole model.

    Args:
        threshold: ``tau``, the momentum magnitude needed to flip (> 0).
        gamma: The momentum's adaptivity rate, in (0, 1]. It is this
            optimizer's ``learning_rate``, so a ``LearningRateSchedule`` may
            decay it.
        fp_optimizer: Optimizer (object, name or config) for the non-binary
            variables; default ``Adam(1e-3)``.
        binary_variables: Predicate choosing the binary variables; default
            :func:`is_binary_variable` (kernels of tfcompress binary layers
            with ``"ste_sign"``-like quantizers). Not serialized.
        name: The optimizer's name.
        **kwargs: Other ``keras.optimizers.Optimizer`` arguments.

    Raises:
        ValueError: If ``threshold <= 0`` or ``gamma`` is outside (0, 1].

    Example:
        >>> model.compile(optimizer=Bop(threshold=1e-6, gamma=1e-3,
        ...                             fp_optimizer=keras.optimizers.Adam(1e-2)),
        ...               loss=...)

    References:
        Helwegen et al., "Latent Weights Do Not Exist: Rethinking Binarized
        Neural Network Optimization", NeurIPS 2019 (arXiv:1906.02107).
    """

    def __init__(
        self,
        threshold: float = 1e-8,
        gamma: float | keras.optimizers.schedules.LearningRateSchedule = 1e-4,
        fp_optimizer: keras.optimizers.Optimizer | str | dict | None = None,
        binary_variables: Callable[[Any], bool] | None = None,
        name: str = "bop",
        **kwargs,
    ) -> None:
        if not (isinstance(threshold, (int, float)) and threshold > 0):
            raise ValueError(f"threshold must be a number > 0, got {threshold!r}")
        if isinstance(gamma, (int, float)) and not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
        kwargs.pop("learning_rate", None)
        super().__init__(learning_rate=gamma, name=name, **kwargs)
        self.threshold = float(threshold)
        if fp_optimizer is None:
            fp_optimizer = keras.optimizers.Adam(1e-3)
        self.fp_optimizer = keras.optimizers.get(fp_optimizer)
        self.binary_variables = binary_variables or is_binary_variable

    def _split(self, variables):
        binary = [v for v in variables if self.binary_variables(v)]
        other = [v for v in variables if not self.binary_variables(v)]
        return binary, other

    def build(self, var_list) -> None:
        if self.built:
            return
        binary, other = self._split(var_list)
        super().build(binary)
        self._momentums = self.add_optimizer_variables(binary, "momentum")
        if other and not self.fp_optimizer.built:
            self.fp_optimizer.build(other)

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None:
            raise ValueError("Bop.apply needs trainable_variables (it splits binary from float)")
        pairs = list(zip(grads, trainable_variables))
        if not self.built:
            self.build([v for _, v in pairs])
        binary = [(g, v) for g, v in pairs if self.binary_variables(v)]
        other = [(g, v) for g, v in pairs if not self.binary_variables(v)]
        if other:
            self.fp_optimizer.apply([g for g, _ in other], [v for _, v in other])
        if binary:
            super().apply([g for g, _ in binary], [v for _, v in binary])
        return self.iterations

    def update_step(self, gradient, variable, learning_rate):
        gamma = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        m = self._momentums[self._get_variable_index(variable)]
        m_new = (1.0 - gamma) * m + gamma * gradient
        self.assign(m, m_new)
        # A plain tensor: JAX's where() refuses a Keras Variable.
        w = ops.convert_to_tensor(variable)
        flip = ops.logical_and(
            ops.greater(ops.abs(m_new), self.threshold),
            ops.equal(ops.greater_equal(m_new, 0), ops.greater_equal(w, 0)),
        )
        self.assign(variable, ops.where(flip, -w, w))

    @property
    def variables(self) -> list:
        # The float optimizer's state is part of this one's (checkpoints, .keras).
        return self._variables[:] + list(self.fp_optimizer.variables)

    @property
    def gamma(self):
        return self.learning_rate

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        gamma = config.pop("learning_rate")
        config.update(
            threshold=self.threshold,
            gamma=gamma,
            fp_optimizer=keras.optimizers.serialize(self.fp_optimizer),
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects=None) -> Bop:
        config = dict(config)
        if isinstance(config.get("gamma"), dict):
            config["gamma"] = keras.optimizers.schedules.deserialize(config["gamma"])
        config["fp_optimizer"] = keras.optimizers.deserialize(
            config["fp_optimizer"], custom_objects=custom_objects
        )
        return cls(**config)
