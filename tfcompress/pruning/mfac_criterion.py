"""``MFACCriterion``: second-order (WoodFisher) saliency for GradualPruning, ``criterion="mfac"``.

Each weight is scored by the loss increase Optimal Brain Surgeon predicts for
removing it, ``rho_q = w_q^2 / (2 [F^-1]_qq)``, where ``F`` is the damped
empirical Fisher of ``m`` mini-batch gradients and ``diag(F^-1)`` comes from
M-FAC's matrix-free inverse (:class:`tfcompress.core.fisher.InverseFisher`).
Unlike magnitude, a weight whose direction the loss is flat along scores low
even when it is large, and one the loss is sharp along scores high.
"""

from __future__ import annotations

import keras
import numpy as np

from tfcompress.core.fisher import InverseFisher, relative_damping
from tfcompress.pruning.masks import PruningCriterion, register_criterion

__all__ = ["MFACCriterion"]


def _positive_int(name: str, value: object, none_ok: bool = False) -> int | None:
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        expected = "a positive integer or None" if none_ok else "a positive integer"
        raise ValueError(f"MFACCriterion: {name} must be {expected}, got {value!r}")
    return int(value)


@keras.saving.register_keras_serializable(package="tfcompress")
class MFACCriterion(PruningCriterion):
    """WoodFisher/OBS saliency ``w_q^2 / (2 [F^-1]_qq)`` with M-FAC's inverse Fisher.

    For each pruned weight, the pruning callback collects ``num_gradients``
    loss gradients, each on ``batch_size`` examples of its ``data``, and this
    criterion forms ``F = lambda * I + G^T G / m`` over the weight's flattened
    entries (block-diagonal in blocks of ``block_size``), with ``lambda =
    damping * mean(diag(G^T G / m))`` (relative to that weight's own gradient
    scale, over its non-zero entries). Entries that are already zero are left out of ``G`` (the Fisher of
    the weights still alive). A block, channel or N:M unit scores the sum of
    its entries' saliencies (the independent-removal approximation).

    Only the masks use the second-order information: GradualPruning does not
    apply WoodFisher's weight update (training recovers instead); the one-shot
    ``tfcompress.oneshot.mfac_prune`` does.

    Args:
        num_gradients: ``m``, mini-batch gradients per mask update (>= 1).
        batch_size: Examples per gradient (the callback cycles through its
            ``data``).
        damping: Relative damping (> 0): ``lambda`` is this times the mean
            diagonal of the empirical Fisher.
        block_size: Block of the block-diagonal Fisher, in flattened entries of
            one weight; None: one block per weight (memory ``8 m^2`` bytes per
            block plus the gradients).

    Raises:
        ValueError: For a non-positive or non-integer count/size, or a damping
            that is not a finite number > 0; from :meth:`contributions`, when no
            gradients are given.

    Example:
        >>> pruning = tfc.callbacks.GradualPruning(
        ...     0.8, end_step=300, frequency=50,
        ...     criterion=MFACCriterion(num_gradients=16, batch_size=16),
        ...     data=(x_train[:512], y_train[:512]))
        >>> model.fit(x_train, y_train, epochs=3, callbacks=[pruning])

    References:
        Singh, Alistarh. "WoodFisher: Efficient Second-Order Approximation for
        Neural Network Compression", NeurIPS 2020. Frantar, Kurtic, Alistarh.
        "M-FAC: Efficient Matrix-Free Approximations of Second-Order
        Information", NeurIPS 2021.
    """

    needs_gradients = True

    def __init__(
        self,
        num_gradients: int = 16,
        batch_size: int = 16,
        damping: float = 1e-2,
        block_size: int | None = 2048,
    ):
        self.num_gradients = _positive_int("num_gradients", num_gradients)
        self.batch_size = _positive_int("batch_size", batch_size)
        relative_damping(np.zeros(1), damping)  # validates it
        self.damping = float(damping)
        self.block_size = _positive_int("block_size", block_size, none_ok=True)

    @property
    def gradient_samples(self) -> int:  # type: ignore[override]
        return self.num_gradients

    @property
    def gradient_batch_size(self) -> int:  # type: ignore[override]
        return self.batch_size

    def contributions(self, weight: np.ndarray, gradient: np.ndarray | None = None) -> np.ndarray:
        """Per-entry saliency ``w^2 / (2 [F^-1]_qq)``, the weight's shape.

        Args:
            weight: The weight.
            gradient: A ``(m, *weight.shape)`` stack of gradients (or one gradient
                of the weight's shape).

        Raises:
            ValueError: If ``gradient`` is None or does not fit the weight.
        """
        if gradient is None:
            raise ValueError(
                "MFACCriterion needs loss gradients of every pruned weight; give the "
                "pruning callback data=(x, y) to compute them"
            )
        w = np.asarray(weight, np.float64)
        g = np.asarray(gradient, np.float64)
        if g.shape == w.shape:
            g = g[None]
        if g.shape[1:] != w.shape:
            raise ValueError(
                f"MFACCriterion: gradients of shape {g.shape} do not fit a weight of shape "
                f"{w.shape}; expected (m, *{w.shape})"
            )
        flat = w.reshape(-1)
        live = flat != 0
        stack = np.where(live, g.reshape(len(g), -1), 0.0)  # the live weights' Fisher
        damping = relative_damping(stack[:, live], self.damping)
        fisher = InverseFisher(stack, damping, block_size=self.block_size)
        return fisher.scores(flat).reshape(w.shape)

    def get_config(self) -> dict:
        return {
            "num_gradients": self.num_gradients,
            "batch_size": self.batch_size,
            "damping": self.damping,
            "block_size": self.block_size,
        }


register_criterion("mfac", MFACCriterion)
