"""LowRankDense: a Dense kernel ``W ~ A B`` stored and applied as two factors.

:class:`~tfcompress.lowrank.conv.LowRankConv2D` is its convolution counterpart.

The factors are ordinary matrix multiplies and convolutions, so the saving in
parameters and multiply-accumulates is a real saving in any runtime: TFLite
sees plain FULLY_CONNECTED / CONV_2D ops, no special kernels.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

from tfcompress.lowrank import decompositions as lr

__all__ = ["LowRankDense"]


def _numpy(x: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


@keras.saving.register_keras_serializable(package="tfcompress")
class LowRankDense(keras.layers.Layer):
    """A Dense layer whose kernel is the product of two factors: ``y = act((x A) B + b)``.

    ``A`` is ``(in, rank)`` and ``B`` is ``(rank, units)``, so the layer has
    ``rank * (in + units)`` kernel parameters and as many multiply-accumulates
    per example, instead of ``in * units``. It saves both when
    ``rank < in * units / (in + units)``. Initialise it from a trained Dense
    kernel with :meth:`set_kernel` (truncated SVD) or let
    :func:`tfcompress.factorize_model` do it.

    Args:
        units: Output dimension.
        rank: Inner dimension of the factorization, ``1 <= rank < min(in, units)``
            (checked when the layer is built).
        activation: As in ``keras.layers.Dense``.
        use_bias: As in ``keras.layers.Dense``.
        kernel_initializer: Initializer of each factor.
        bias_initializer: As in ``keras.layers.Dense``.
        kernel_regularizer: Applied to each factor.
        bias_regularizer: As in ``keras.layers.Dense``.
        activity_regularizer: As in ``keras.layers.Dense``.
        kernel_constraint: Applied to each factor.
        bias_constraint: As in ``keras.layers.Dense``.
        lora_rank: Accepted for signature compatibility with Dense; must be None
            (the layer is already low-rank).
        lora_alpha: Must be None, as ``lora_rank``.
        quantization_config: Must be None; quantize with tfcompress's
            quantization-aware layers or at TFLite export instead.
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).

    Returns:
        A tensor of shape ``(..., units)``.

    Raises:
        ValueError: ``rank < 1``, ``rank >= min(in, units)`` at build time,
            ``units < 1``, or a LoRA/quantization argument.

    Example:
        >>> layer = LowRankDense(64, rank=8, activation="relu")
        >>> y = layer(np.zeros((2, 256), "float32"))
        >>> layer.set_kernel(trained_dense.kernel)  # truncated-SVD initialisation

    References:
        Denton et al., "Exploiting Linear Structure Within Convolutional
        Networks for Efficient Evaluation", NeurIPS 2014; Eckart and Young,
        "The approximation of one matrix by another of lower rank", 1936.
    """

    def __init__(
        self,
        units: int,
        rank: int,
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        activity_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        lora_rank: int | None = None,
        lora_alpha: float | None = None,
        quantization_config: Any = None,
        **kwargs: Any,
    ) -> None:
        for argument, value in (
            ("lora_rank", lora_rank),
            ("lora_alpha", lora_alpha),
            ("quantization_config", quantization_config),
        ):
            if value is not None:
                raise ValueError(
                    f"LowRankDense does not support {argument} (got {value!r}); expected None"
                )
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"units must be a positive int, got {units!r}")
        self.units = int(units)
        self.rank = lr.check_rank_arg(rank)
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)
        self.supports_masking = True
        self._built_input_shape: tuple | None = None

    def build(self, input_shape: tuple) -> None:
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(f"{self.name}: the last input dimension must be known")
        lr.check_rank(self.rank, input_dim, self.units)
        self._built_input_shape = tuple(input_shape)
        self.kernel_a = self.add_weight(
            name="kernel_a",
            shape=(input_dim, self.rank),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.kernel_b = self.add_weight(
            name="kernel_b",
            shape=(self.rank, self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = (
            self.add_weight(
                name="bias",
                shape=(self.units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
            if self.use_bias
            else None
        )
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_dim})

    def call(self, inputs: Any) -> Any:
        # (x A) B, never x (A B): the product of the factors must not be folded
        # back into a full matrix by the graph or the TFLite converter.
        outputs = ops.matmul(ops.matmul(inputs, self.kernel_a), self.kernel_b)
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)
        return self.activation(outputs) if self.activation is not None else outputs

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.units)

    @property
    def kernel(self) -> Any:
        """The effective ``(in, units)`` kernel ``A @ B`` (a tensor, computed on access)."""
        return ops.matmul(self.kernel_a, self.kernel_b)

    def set_kernel(self, kernel: Any, bias: Any = None) -> float:
        """Sets the factors to the truncated SVD of ``kernel`` (and the bias, if given).

        Args:
            kernel: An ``(in, units)`` matrix, e.g. a trained Dense kernel.
            bias: Optional ``(units,)`` bias.

        Returns:
            The squared Frobenius error ``||kernel - A B||^2`` (the SVD tail).

        Raises:
            ValueError: If the layer is not built or the shapes differ.
        """
        if not self.built:
            raise ValueError(f"{self.name}: build the layer before set_kernel")
        matrix = _numpy(kernel).astype(np.float64)
        expected = (int(self.kernel_a.shape[0]), self.units)
        if matrix.shape != expected:
            raise ValueError(f"kernel must have shape {expected}, got {matrix.shape}")
        a, b = lr.truncated_svd(matrix, self.rank)
        self.kernel_a.assign(a)
        self.kernel_b.assign(b)
        if bias is not None and self.bias is not None:
            self.bias.assign(_numpy(bias).astype(self.bias.dtype))
        return lr.svd_tail_error(np.linalg.svd(matrix, compute_uv=False), self.rank)

    def compression_stats(self) -> dict[str, Any]:
        """Parameters and MACs per example of the factorized layer, for ``tfc.summary``."""
        if not self.built:
            return {}
        input_dim = int(self.kernel_a.shape[0])
        kernel = self.rank * (input_dim + self.units)
        stats: dict[str, Any] = {"params": kernel + (self.units if self.use_bias else 0)}
        leading = self._built_input_shape[1:-1] if self._built_input_shape else ()
        if all(d is not None for d in leading):
            stats["macs"] = kernel * math.prod(leading)
        return stats

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "rank": self.rank,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": keras.regularizers.serialize(self.activity_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            }
        )
        return config
