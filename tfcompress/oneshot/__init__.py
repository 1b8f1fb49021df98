"""One-shot post-training compression from calibration data: no retraining.

``prune`` (SparseGPT, exact OBS, magnitude, M-FAC; unstructured or N:M),
``quantize`` (GPTQ, round-to-nearest) and ``compress`` (joint pruning and
quantization) take a trained model and a few hundred typical inputs and
return a compressed copy: an ordinary Keras model (masks as after
``GradualPruning``, ``Quant*`` layers holding the grid) that fine-tunes,
saves, loads and exports like any other. See ``docs/oneshot.md``.

The numerical pieces are usable on their own: :mod:`tfcompress.oneshot.solvers`
(column sweep, baselines, errors), :mod:`tfcompress.oneshot.obs` (exact OBS),
:mod:`tfcompress.oneshot.hessian` (accumulation, dampening, inverse factor),
:func:`tfcompress.oneshot.engine.solve_layer` (one layer, given its Hessian).
"""

from tfcompress.oneshot.api import (
    COMPRESS_METHODS,
    PRUNE_METHODS,
    QUANTIZE_METHODS,
    compress,
    prune,
    quantize,
)
from tfcompress.oneshot.grid import SUPPORTED_BITS
from tfcompress.oneshot.report import LayerReport, OneShotReport

__all__ = [
    "COMPRESS_METHODS",
    "PRUNE_METHODS",
    "QUANTIZE_METHODS",
    "SUPPORTED_BITS",
    "LayerReport",
    "OneShotReport",
    "compress",
    "prune",
    "quantize",
]
