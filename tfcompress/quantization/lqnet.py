"""LQ-Nets: quantizers whose levels are spanned by a learned basis (Zhang et al. 2018).

A ``K``-bit LQ-Net quantizer keeps a basis ``v`` of ``K`` real numbers (one basis
per output channel for kernels). Its ``2^K`` levels are every combination
``sum_i b_i v_i`` with codes ``b_i`` in ``{-1, +1}`` (weights) or ``{0, 1}``
(non-negative activations), so the grid need not be uniform: it follows the
values. Each value is mapped to its nearest level. The basis is not trained by
gradient descent but fitted to the values in every training step by *quantization
error minimisation* (QEM): with ``B`` the codes of the nearest levels (one row per
value), the least-squares basis is ``v* = (B^T B)^-1 B^T x``, and the stored basis
moves to it by an exponential moving average.
"""

from __future__ import annotations

import itertools
from typing import Any

import keras
import numpy as np
from keras import ops

from tfcompress.core.replicas import replica_mean
from tfcompress.quantization import binary_ops
from tfcompress.quantization import ops as q
from tfcompress.quantization.base import Quantizer, scalar_state

__all__ = ["LQNetQuantizer"]

_MODES = ("weights", "activations")


def _codes(bits: int, mode: str) -> np.ndarray:
    """The ``(2^K, K)`` code matrix: row ``j`` holds the bits of level ``j``."""
    rows = np.array(list(itertools.product((0.0, 1.0), repeat=bits)), np.float32)[:, ::-1]
    return 2.0 * rows - 1.0 if mode == "weights" else rows


@keras.saving.register_keras_serializable(package="tfcompress")
class LQNetQuantizer(Quantizer):
    """LQ-Nets learned quantizer: the nearest of ``2^K`` levels spanned by a learned basis.

    Forward: ``Q(x) = v^T e(x)``, where ``e(x)`` is the code (``{-1,+1}^K`` for
    weights, ``{0,1}^K`` for activations) of the level ``v^T b`` nearest to ``x``.
    Pseudo-gradient: straight through, ``dQ/dx = 1`` (for activations only inside
    ``[lowest level, highest level]``, 0 outside, as for clipped activations). The
    basis ``v`` gets no gradient: in training each call fits it to the values by
    QEM, ``v* = (B^T B + eps I)^-1 B^T x`` over the values of a channel (``B``: the
    codes of their nearest levels, computed with the current basis), and stores
    ``momentum * v + (1 - momentum) * v*`` (summed over ``tf.distribute`` replicas,
    so every replica keeps the same basis). The first training call (or
    :meth:`initialize`) starts from a uniform grid ``v_i = 2^i s`` scaled to the
    values: ``s = 2 mean|x| / 2^K`` for weights, ``s = 3 mean(x) / (2^K - 1)``
    for activations.

    The levels are not a uniform grid, so there is no int8 range to export: a layer
    with this quantizer exports to a float TFLite file (kernels fold to their levels;
    an input is compared with the midpoints between the sorted levels).

    Args:
        bits: ``K``, 1 to 4 (``2^K`` levels are compared per value).
        mode: ``"weights"`` (codes in ``{-1, +1}``, symmetric levels) or
            ``"activations"`` (codes in ``{0, 1}``, for non-negative inputs such as
            ReLU outputs).
        axis: Channel axis for one basis per channel (``-1``: the output channels of
            a Dense/Conv kernel, as in the paper), or ``None`` for one basis.
        momentum: Moving-average momentum of the basis, in ``[0, 1)``.

    Raises:
        ValueError: For ``bits`` outside ``[1, 4]``, an unknown ``mode``, a
            ``momentum`` outside ``[0, 1)``, or (at build) an ``axis`` outside the
            tensor's rank or along an unknown dimension.

    Example:
        >>> layer = tfc.layers.QuantConv2D(
        ...     32, 3, kernel_quantizer=LQNetQuantizer(2, "weights", axis=-1),
        ...     input_quantizer=LQNetQuantizer(2, "activations"), activation_quantizer=None)

    References:
        Zhang, Yang, Ye & Hua, "LQ-Nets: Learned Quantization for Highly Accurate and
        Compact Deep Neural Networks", ECCV 2018.
    """

    stateful = True
    min_bits = 1
    max_bits = 4

    def __init__(
        self, bits: int = 2, mode: str = "weights", axis: int | None = None, momentum: float = 0.9
    ) -> None:
        super().__init__(bits)
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got mode={mode!r}")
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
            raise ValueError(f"axis must be None or an integer, got axis={axis!r}")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)):
            raise ValueError(f"momentum must be a number in [0, 1), got momentum={momentum!r}")
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got momentum={momentum!r}")
        self.mode, self.axis, self.momentum = mode, axis, float(momentum)
        self.codes = _codes(self.bits, mode)

    # -- state ----------------------------------------------------------------------

    def build(self, layer, shape, name):
        shape = tuple(shape)
        axis = q.validate_axis(self.axis, shape, f"{type(self).__name__} of {name!r}")
        if axis is not None and shape[axis] is None:
            raise ValueError(f"axis={self.axis} of {name!r} has unknown size in shape {shape}")
        groups = 1 if axis is None else shape[axis]
        basis = layer.add_weight(
            name=f"{name}_basis",
            shape=(groups, self.bits),
            initializer=keras.initializers.Constant(self._uniform_basis()),
            trainable=False,
            dtype="float32",
            autocast=False,
        )
        return {"basis": basis, "ready": scalar_state(layer, f"{name}_ready")}

    def _uniform_basis(self) -> Any:
        return ops.convert_to_tensor(2.0 ** np.arange(self.bits), "float32")

    def _axis(self, x) -> int | None:
        return None if self.axis is None else self.axis % len(x.shape)

    def _channels_last(self, x):
        """``x`` as ``(values, groups)``: channel axis last, everything else flattened."""
        axis = self._axis(x)
        if axis is None:
            return ops.reshape(x, (-1, 1))
        moved = ops.moveaxis(x, axis, -1)
        return ops.reshape(moved, (-1, x.shape[axis]))

    def _initial_basis(self, x):
        flat = self._channels_last(ops.cast(x, "float32"))
        if self.mode == "weights":
            scale = 2.0 * ops.mean(ops.abs(flat), axis=0) / 2**self.bits
        else:
            scale = 3.0 * ops.mean(ops.maximum(flat, 0.0), axis=0) / (2**self.bits - 1)
        scale = ops.maximum(scale, 1e-8)
        return scale[:, None] * self._uniform_basis()[None, :]

    def initialize(self, state, x):
        state["basis"].assign(self._initial_basis(ops.convert_to_tensor(x)))
        state["ready"].assign(1.0)

    # -- forward --------------------------------------------------------------------

    def call(self, x, state, training):
        xf = ops.cast(x, "float32")
        basis = ops.convert_to_tensor(state["basis"])
        if training:
            basis = ops.where(state["ready"] > 0, basis, self._initial_basis(xf))
        codes = ops.convert_to_tensor(self.codes)
        levels = ops.matmul(basis, ops.transpose(codes))  # (G, L)
        groups, count = levels.shape[0], 2**self.bits
        # Nearest level: the lowest level plus one step per midpoint (between sorted
        # levels) below the value; a tie goes down. Elementwise on x with per-channel
        # constants: TFLite's converter folds it on a kernel like any elementwise op
        # (an argmin, a gather or a (values, levels) intermediate it leaves unfolded).
        ordered = ops.sort(levels, axis=-1)
        axis = self._axis(xf)
        shape = q.broadcast_shape(len(xf.shape), axis, groups) if axis is not None else ()

        def along(column):  # a (G,) vector broadcast along the channel axis
            return ops.reshape(column, shape)

        quantized = along(ordered[:, 0])
        rank = None
        for j in range(count - 1):
            passed = ops.cast(xf > along(0.5 * (ordered[:, j] + ordered[:, j + 1])), "float32")
            quantized = quantized + along(ordered[:, j + 1] - ordered[:, j]) * passed
            if training:
                rank = passed if rank is None else rank + passed
        if training:
            flat_rank = ops.cast(self._channels_last(rank), "int32")  # (N, G)
            index = flat_rank + ops.arange(groups, dtype="int32")[None] * count
            order = ops.reshape(ops.argsort(levels, axis=-1), (-1,))
            chosen = ops.take(codes, ops.take(order, index), axis=0)  # (N, G, K)
            flat = self._channels_last(ops.stop_gradient(xf))
            self._fit_basis(state, basis, flat, chosen)
        slope = 1.0
        if self.mode == "activations":  # clipped: no gradient outside the levels
            inside = (xf >= along(ordered[:, 0])) & (xf <= along(ordered[:, -1]))
            slope = ops.cast(inside, "float32")
        return ops.cast(binary_ops.with_gradient(quantized, xf, slope), x.dtype)

    def _fit_basis(self, state, basis, flat, codes):
        """QEM: least-squares basis for the current codes, folded into the moving average."""
        gram = ops.einsum("ngk,ngl->gkl", codes, codes)  # (G, K, K)
        moment = ops.einsum("ngk,ng->gk", codes, flat)  # (G, K)
        # Mean over replicas: proportional to their sums, which the solve does not mind.
        gram, moment = replica_mean(gram), replica_mean(moment)
        eye = ops.eye(self.bits, dtype="float32")
        ridge = 1e-4 * (ops.trace(gram, axis1=1, axis2=2) / self.bits + 1.0)
        fitted = ops.solve(gram + ridge[:, None, None] * eye[None], moment[..., None])[..., 0]
        # A code bit no value used this step (activations all at level 0) says nothing
        # about its basis element: keep it rather than pull it to 0.
        used = ops.diagonal(gram, axis1=1, axis2=2) > 0
        fitted = ops.where(used, fitted, basis)
        new = self.momentum * basis + (1.0 - self.momentum) * fitted
        state["basis"].assign(ops.stop_gradient(new))
        state["ready"].assign(1.0)

    def get_config(self) -> dict[str, Any]:
        return {"bits": self.bits, "mode": self.mode, "axis": self.axis, "momentum": self.momentum}
