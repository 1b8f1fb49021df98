"""Structured matrices on the suite, at ``lowrank_svd``'s parameter counts.

``structure_model`` replaces Dense and 1x1 Conv2D layers by block-circulant or
block-Toeplitz ones (the least-squares nearest structured kernel), with the
block size (a power of two dividing the layer's dimensions) whose parameter
count is nearest :func:`~tfcompress.bench.methods.lowrank.param_target`; layers
the block size does not divide are left as they were. Then the workload's
fine-tune budget. The files use the layers' default product (a circular
convolution lowered to builtin ``CONV_2D``, see ``docs/structured.md``), so
they store the structured weights, not the expanded matrices.
"""

from __future__ import annotations

import keras

from tfcompress.bench.api import Compressed, MethodRun, register_method
from tfcompress.bench.methods.lowrank import (
    LEVEL_NAME,
    LEVELS,
    QUICK_LEVELS,
    knob_notes,
    nearest_knob,
    param_target,
)
from tfcompress.structured.convert import structure_model

BLOCK_SIZES = (2, 4, 8, 16, 32, 64)
WORKLOADS = ("workload:digits_cnn", "workload:mobilenet_digits")


def _structured(kind: str, model: keras.Model, run: MethodRun) -> Compressed:
    target = param_target(model, run.level)
    candidates = {}
    for block in BLOCK_SIZES:
        try:
            candidates[block] = structure_model(model, kind, block, verbose=0)
        except ValueError:  # no layer this block size divides
            continue
    block = nearest_knob({b: m.count_params() for b, m in candidates.items()}, target)
    small = candidates[block]
    run.finetune(small)
    notes = knob_notes("block size", block, small.count_params(), target, model.count_params())
    return Compressed(small, export=None, notes=notes)


def _register(kind: str, description: str) -> None:
    register_method(
        f"{kind}_dense",
        family="structured matrix",
        levels=LEVELS,
        quick_levels=QUICK_LEVELS,
        level_name=LEVEL_NAME,
        applies_to=WORKLOADS,
        description=description,
    )(lambda model, run: _structured(kind, model, run))


_register(
    "circulant",
    "structure_model(kind='circulant'): Dense and 1x1 Conv2D as block-circulant matrices "
    "(b parameters per b x b block; Cheng et al. 2015, CirCNN), the block size nearest the "
    "parameter target, then fine-tune",
)
_register(
    "toeplitz",
    "structure_model(kind='toeplitz'): Dense and 1x1 Conv2D as block-Toeplitz matrices "
    "(2b-1 parameters per b x b block; Sindhwani et al. 2015), the block size nearest the "
    "parameter target, then fine-tune",
)
