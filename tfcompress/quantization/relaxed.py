"""Relaxed binary training by mirror descent: ``tanh(beta x)`` annealed to the sign.

Ajanthan et al. (2021) read binary training as mirror descent: the latent
weights ``x`` live in the dual space of a mirror map whose inverse is
``w = tanh(beta x)``, so every update stays inside ``[-1, 1]`` and ``w`` is a
relaxed binary weight that hardens as ``beta`` grows. The mirror-descent step
``x <- x - lr dL/dw`` takes the gradient with respect to ``w`` as it is: the
straight-through estimator is the ``beta -> infinity`` case of this scheme
(forward the sign, backward the identity), and a finite, growing ``beta`` makes
it adaptive (early on the forward pass is nearly linear, late it is the sign).

For ``K`` bits the sign becomes a staircase of ``2^K`` uniform levels in
``[-1, 1]`` (step ``d = 2 / (2^K - 1)``, thresholds ``t_j`` halfway between
levels) and its relaxation a sum of shifted tanh steps,
``w = -1 + sum_j (d / 2) (1 + tanh(beta (x - t_j)))`` (``tanh(beta x)`` at
``K = 1``), which tends to the staircase as ``beta`` grows.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from tfcompress.quantization import binary_ops
from tfcompress.quantization.base import Quantizer
from tfcompress.quantization.schedule import ProgressQuantizer, ProgressState

__all__ = ["MirrorTanhQuantizer", "MirrorTanhSign", "mirror_beta", "mirror_staircase"]


def mirror_beta(progress, beta_min: float, beta_max: float):
    """``beta = beta_min (beta_max / beta_min)^p``: log-linear in the progress ``p``."""
    progress = ops.cast(ops.convert_to_tensor(progress), "float32")
    return beta_min * ops.exp(progress * math.log(beta_max / beta_min))


def mirror_staircase(x, bits: int, beta=None):
    """The ``2^bits``-level staircase in ``[-1, 1]`` (``beta=None``) or its tanh relaxation.

    Hard: ``-1 + d * #{j : x >= t_j}``; relaxed: ``-1 + sum_j (d / 2) (1 + tanh(beta
    (x - t_j)))``, with ``d = 2 / (2^bits - 1)`` and ``t_j = -1 + d (j + 1/2)``.
    """
    step = 2.0 / (2**bits - 1)
    out = ops.full_like(x, -1.0)
    for j in range(2**bits - 1):
        threshold = -1.0 + step * (j + 0.5)
        if beta is None:
            out = out + step * ops.cast(x >= threshold, x.dtype)
        else:
            out = out + 0.5 * step * (1.0 + ops.tanh(beta * (x - threshold)))
    return out


def _check_betas(beta_min: Any, beta_max: Any) -> None:
    for name, value in (("beta_min", beta_min), ("beta_max", beta_max)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a finite number > 0, got {name}={value!r}")
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {name}={value!r}")
    if beta_max < beta_min:
        raise ValueError(
            f"beta_max must be >= beta_min, got beta_min={beta_min}, beta_max={beta_max}"
        )


@keras.saving.register_keras_serializable(package="tfcompress")
class MirrorTanhSign(ProgressQuantizer):
    """Binary weights trained by mirror descent with the tanh mirror map (MD-tanh).

    Training forward: ``w = tanh(beta x)`` with ``beta = beta_min (beta_max /
    beta_min)^p``, ``p`` the training progress in ``[0, 1]`` set by
    :class:`~tfcompress.callbacks.QuantizerSchedule`. Pseudo-gradient:
    ``dw/dx = 1`` (the mirror-descent update applies ``dL/dw`` to the latent
    ``x`` directly). Inference (evaluation, export, packing): ``sign(x)``, exactly
    +-1 (``+1`` at 0), so the layer is a plain binary layer once trained, with
    ``pack_kind = "binary"``.

    Drive it with ``QuantizerSchedule`` (``fit(..., callbacks=[...])``): without
    it ``p`` stays 0, training sees ``tanh(beta_min x)`` to the end, and the sign
    used at inference differs from what was trained.

    Args:
        beta_min: ``beta`` at the start (> 0); ``tanh(x)`` at the default 1.
        beta_max: ``beta`` at the end (>= ``beta_min``); at the default 1000 the
            training forward equals the sign for ``|x| > 0.004``.

    Raises:
        ValueError: For a ``beta`` that is not a finite number > 0, or
            ``beta_max < beta_min``.

    Example:
        >>> model = tfc.models.digits_binary_cnn(kernel_quantizer="md_tanh")
        >>> model.fit(x, y, epochs=15, callbacks=[tfc.callbacks.QuantizerSchedule()])

    References:
        Ajanthan, Gupta, Torr, Hartley & Dokania, "Mirror Descent View for
        Neural Network Quantization", AISTATS 2021 (MD-tanh).
    """

    pack_kind = "binary"

    def __init__(self, beta_min: float = 1.0, beta_max: float = 1000.0) -> None:
        super().__init__()
        _check_betas(beta_min, beta_max)
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def beta(self, progress) -> float:
        """``beta`` at ``progress`` as a Python float."""
        value = mirror_beta(progress, self.beta_min, self.beta_max)
        return float(ops.convert_to_numpy(value))

    def call(self, x, state, training):
        if not training:
            return binary_ops.sign(x)
        xf = ops.cast(x, "float32")
        beta = mirror_beta(self._progress(state), self.beta_min, self.beta_max)
        relaxed = ops.tanh(beta * xf)
        return ops.cast(binary_ops.with_gradient(relaxed, xf, 1.0), x.dtype)

    def get_config(self) -> dict[str, Any]:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max}


@keras.saving.register_keras_serializable(package="tfcompress")
class MirrorTanhQuantizer(ProgressState, Quantizer):
    """``K``-bit weights trained by mirror descent: tanh steps annealed to a staircase.

    The multi-bit form of :class:`MirrorTanhSign`. Training forward: the
    relaxed staircase ``w = -1 + sum_j (d / 2)(1 + tanh(beta (x - t_j)))`` of
    :func:`mirror_staircase` (``2^K`` uniform levels in ``[-1, 1]``, ``d = 2 /
    (2^K - 1)``, thresholds halfway between levels), with ``beta = beta_min
    (beta_max / beta_min)^p`` and ``p`` set by
    :class:`~tfcompress.callbacks.QuantizerSchedule`. Pseudo-gradient: 1.
    Inference: the staircase itself (the levels, exactly). The levels carry no
    scale: put a BatchNormalization (or a bias-free layer followed by one) after
    the layer, as for binary weights.

    With ``beta_min = beta_max`` large (say ``1e6``) the training forward is the
    staircase from the first step: plain straight-through training on the same
    levels, the baseline this relaxation is measured against.

    Args:
        bits: ``K``, 2 to 8 (1 bit is :class:`MirrorTanhSign`, ``"md_tanh"``).
        beta_min: ``beta`` at the start (> 0).
        beta_max: ``beta`` at the end (>= ``beta_min``).

    Raises:
        ValueError: For ``bits`` outside ``[2, 8]`` or a bad ``beta``.

    Example:
        >>> layer = tfc.layers.QuantConv2D(
        ...     64, 3, use_bias=False, kernel_quantizer=MirrorTanhQuantizer(2),
        ...     activation_quantizer=None)
        >>> model.fit(x, y, epochs=15, callbacks=[tfc.callbacks.QuantizerSchedule()])

    References:
        Ajanthan, Gupta, Torr, Hartley & Dokania, "Mirror Descent View for
        Neural Network Quantization", AISTATS 2021 (tanh mirror maps for
        k-bit weights).
    """

    min_bits = 2
    max_bits = 8

    def __init__(self, bits: int = 2, beta_min: float = 1.0, beta_max: float = 1000.0) -> None:
        super().__init__(bits)
        _check_betas(beta_min, beta_max)
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def call(self, x, state, training):
        xf = ops.cast(x, "float32")
        if not training:
            return ops.cast(mirror_staircase(xf, self.bits), x.dtype)
        beta = mirror_beta(self._progress(state), self.beta_min, self.beta_max)
        relaxed = mirror_staircase(xf, self.bits, beta)
        return ops.cast(binary_ops.with_gradient(relaxed, xf, 1.0), x.dtype)

    def get_config(self) -> dict[str, Any]:
        return {"bits": self.bits, "beta_min": self.beta_min, "beta_max": self.beta_max}
