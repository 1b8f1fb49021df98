"""Low-rank factorization on the suite's workloads: ``factorize_model`` (truncated SVD,
ranks allocated by one global parameter budget) on the trained model, fine-tuned
with the workload's budget. The factors are plain matmuls/convolutions, so MACs and
latency drop with the parameters; exported as float TFLite."""

from __future__ import annotations

import keras
import numpy as np

from tfcompress.bench.api import Compressed, MethodRun, register_method
from tfcompress.core.walk import walk_layers
from tfcompress.lowrank.decompositions import max_useful_rank
from tfcompress.lowrank.factorize import factorize_model

__all__ = ["factorizable_params"]


def factorizable_params(model: keras.Model) -> int:
    """Kernel parameters of the layers ``factorize_model`` could make smaller.

    Dense and Conv2D (exact types, ungrouped; convolutions in their channel
    matrix view ``(kh kw cin, filters)``) whose matrix admits a rank with
    fewer parameters than the kernel.
    """
    total = 0
    seen: set[int] = set()
    for _, layer in walk_layers(model):
        if id(layer) in seen or type(layer) not in (keras.layers.Dense, keras.layers.Conv2D):
            continue
        seen.add(id(layer))
        if getattr(layer, "groups", 1) != 1:
            continue
        shape = tuple(layer.kernel.shape)
        rows, cols = int(np.prod(shape[:-1])), int(shape[-1])
        if max_useful_rank(rows, cols) >= 1:
            total += rows * cols
    return total


@register_method(
    "lowrank_svd",
    family="lowrank",
    levels=(0.5, 0.3, 0.2, 0.1),
    quick_levels=(0.5, 0.2),
    level_name="kept fraction of factorizable params",
    applies_to=("classification", "language_model"),
    description="factorize_model: truncated SVD (Denton et al. 2014) with ranks from one global "
    "budget (the level times the Dense/Conv2D kernel parameters), then fine-tune",
)
def lowrank_svd(model: keras.Model, run: MethodRun) -> Compressed:
    total = int(model.count_params())
    removed = (1.0 - float(run.level)) * factorizable_params(model)
    # factorize_model's target_ratio is over the whole model: the layers it cannot
    # factorize (embeddings, attention, BatchNorm, biases) are kept as they are.
    small = factorize_model(model, target_ratio=(total - removed) / total, verbose=0)
    run.finetune(small)
    return Compressed(small, export=None)
