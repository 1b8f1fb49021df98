"""ToeplitzDense: a Dense kernel made of ``b x b`` Toeplitz blocks (``2b - 1`` parameters each)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from tfcompress.structured.circulant import BlockStructuredDense

__all__ = ["ToeplitzDense"]


@keras.saving.register_keras_serializable(package="tfcompress")
class ToeplitzDense(BlockStructuredDense):
    """A Dense layer whose kernel is block-Toeplitz: ``y = act(x W + b)``.

    ``A = W^T`` (``units x in``) is a grid of ``b x b`` Toeplitz blocks, each
    constant along its diagonals: ``A_ij[r, s] = t_ij[r - s + b - 1]`` with
    ``2b - 1`` parameters ``t_ij`` (stored as a ``(units/b, in/b, 2b - 1)``
    tensor: ``(2b - 1) * in * units / b^2`` kernel parameters, about twice a
    :class:`~tfcompress.structured.circulant.CirculantDense` of the same block
    size, and more expressive: a circulant block is a Toeplitz block whose
    diagonals wrap around). ``A_ij x_j`` is the linear (not circular)
    convolution of ``x_j`` with ``t_ij``, so the products are those of
    ``CirculantDense``: ``"fft"`` embeds each block in a ``2b x 2b`` circulant
    (first column ``[t_0 .. t_{b-1}, 0, t_{-(b-1)} .. t_{-1}]`` in diagonal
    offsets ``r - s``) and zero-pads ``x_j`` to ``2b``; ``"conv"`` (= ``"auto"``)
    slides ``2b - 1`` taps over ``x_j`` zero-padded by ``b - 1`` on both sides
    (``~2 m n`` multiply-adds, twice a dense product: in LiteRT it is no faster
    than Dense below ~1024 wide, ``docs/structured.md``); ``"dense"`` expands
    the kernel.

    Toeplitz blocks are the displacement-rank-2 member of Sindhwani et al.'s
    low-displacement-rank family; we keep the plain Toeplitz parameterization
    (one parameter per diagonal) because its least-squares projection from a
    trained kernel is exact and cheap: the mean along each diagonal.

    Args:
        units: Output dimension, a multiple of ``block_size``.
        block_size: ``b``, the side of each Toeplitz block (1: a plain Dense kernel).
        activation: As in ``keras.layers.Dense``.
        use_bias: As in ``keras.layers.Dense``.
        kernel_initializer: Draws the diagonals; Glorot/He/LeCun scale as for
            the dense ``(in, units)`` kernel.
        bias_initializer: As in ``keras.layers.Dense``.
        kernel_regularizer: Applied to the diagonals.
        bias_regularizer: As in ``keras.layers.Dense``.
        activity_regularizer: As in ``keras.layers.Dense``.
        kernel_constraint: Applied to the diagonals.
        bias_constraint: As in ``keras.layers.Dense``.
        product: ``"auto"``, ``"fft"``, ``"conv"`` or ``"dense"``; all give the
            same outputs to float tolerance.
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).

    Returns:
        A tensor of shape ``(..., units)``.

    Raises:
        ValueError: ``units`` or ``block_size`` not a positive int, ``block_size``
            not dividing ``units`` (here) or the input dimension (at build), an
            unknown ``product``.

    Example:
        >>> layer = ToeplitzDense(256, block_size=32)
        >>> y = layer(np.zeros((2, 128), "float32"))   # 63 * 128 * 256 / 32**2 weights
        >>> layer.set_kernel(trained_dense.kernel)     # mean along each diagonal

    References:
        Sindhwani, Sainath and Kumar, "Structured Transforms for Small-Footprint
        Deep Learning", NeurIPS 2015; Gray, "Toeplitz and Circulant Matrices: A
        Review", 2006.
    """

    weight_name = "diagonals"

    @classmethod
    def params_per_block(cls, block_size: int) -> int:
        return 2 * block_size - 1

    periodic = False

    @classmethod
    def offset_index(cls, offsets: np.ndarray, block_size: int) -> np.ndarray:
        return offsets + block_size - 1

    @classmethod
    def conv_taps(cls, positions: int) -> int:
        return 2 * positions - 1

    def fft_length(self) -> int:
        return 2 * self.block_size

    def _fft_columns(self, params: Any) -> Any:
        # Offsets 0 .. b-1, a zero, then offsets -(b-1) .. -1 (wrapped around).
        b = self.block_size
        zero = ops.zeros_like(params[..., :1])
        return ops.concatenate([params[..., b - 1 :], zero, params[..., : b - 1]], axis=-1)
