"""The integer grid one-shot quantization rounds to: symmetric, narrow, zero point 0.

A ``b``-bit weight grid is ``{k * s : k = -q, ..., q}`` with ``q = 2^(b-1) - 1``
(``[-7, 7]`` for 4 bits, ``[-127, 127]`` for 8): TFLite's int8 weights have zero
point 0, and the TFLite converter turns a kernel fake-quantized over
``[-q s, q s]`` with ``narrow_range`` into exactly these integers. ``s`` is one
number per tensor, per output channel (a row of the ``(rows, columns)`` weight
matrix) or, with ``group_size``, per run of ``group_size`` columns of a row.

The step is ``s = max|w| / q`` over the weights that share it, as TensorFlow's
fake-quant op computes it (``(hi - lo) / (2 q)`` in float32), so that a kernel
on this grid passes unchanged through the Quant layers' fake quantization and
lands on the same integers in the exported file. Rounding is half-up
(``floor(v + 0.5)``), as in TensorFlow's kernels.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["SUPPORTED_BITS", "GridSpec", "grid_steps", "quantize_columns", "round_to_grid"]

#: Weight bits one-shot quantization supports (what TFLite stores in int8 tensors).
SUPPORTED_BITS = (2, 3, 4, 5, 6, 7, 8)


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """How the grid steps of one weight matrix are shared.

    Attributes:
        bits: Bits per weight (one of :data:`SUPPORTED_BITS`).
        per_channel: One step per row (output channel) instead of one per tensor.
        group_size: One step per ``group_size`` consecutive columns of a row
            (implies per row); ``None`` for none.
    """

    bits: int
    per_channel: bool = True
    group_size: int | None = None

    @property
    def qmax(self) -> int:
        """The largest integer level ``2^(bits-1) - 1``."""
        return 2 ** (self.bits - 1) - 1


def grid_steps(weights: np.ndarray, spec: GridSpec) -> np.ndarray:
    """The step of each row (or the tensor) of ``weights``, shaped ``(G, R)`` or ``(G, 1)``.

    ``weights`` is a ``(G, R, C)`` stack of weight matrices (``G`` independent
    problems, e.g. the channels of a depthwise kernel; one for Dense). A
    per-tensor step is shared by every row of every problem. An all-zero row
    (or tensor) gets step 1, which maps it to zero like any other step.

    Args:
        weights: ``(G, R, C)`` float array (the columns a step covers).
        spec: The grid.

    Returns:
        float32 steps, ``(G, R)`` per row, ``(G, 1)`` (all equal) per tensor.
    """
    magnitude = np.abs(np.asarray(weights, np.float32))
    if spec.per_channel or spec.group_size is not None:
        largest = magnitude.max(axis=-1)
    else:
        largest = np.full((*weights.shape[:1], 1), magnitude.max(initial=0.0), np.float32)
    return _tf_step(largest, spec.qmax)


def _tf_step(largest: np.ndarray, qmax: int) -> np.ndarray:
    """``max|w| / q`` computed as TensorFlow's fake-quant nudging does, in float32."""
    high = np.where(largest > 0, largest, np.float32(qmax)).astype(np.float32)
    low = -high
    return ((high - low) / np.float32(2 * qmax)).astype(np.float32)


def round_to_grid(values: np.ndarray, steps: np.ndarray, qmax: int) -> np.ndarray:
    """The integers ``clip(floor(v / s + 0.5), -q, q)`` (float32 array of whole numbers)."""
    levels = np.floor(values / steps + np.float32(0.5))
    return np.clip(levels, -qmax, qmax).astype(np.float32)


def quantize_columns(values: np.ndarray, steps: np.ndarray, qmax: int) -> np.ndarray:
    """``values`` rounded to the grid: ``s * round_to_grid(values, s)``, float32."""
    return (round_to_grid(values, steps, qmax) * steps).astype(np.float32)
