"""Low-rank factorization on the suite's workloads: ``factorize_model`` (truncated SVD,
ranks allocated by one global parameter budget; or CP chains for KxK convolutions)
on the trained model, fine-tuned with the workload's budget. The factors are plain
matmuls/convolutions, so MACs and latency drop with the parameters; exported as
float TFLite.

``lowrank_svd``'s level (the kept fraction of the factorizable parameters) gives a
total parameter count, :func:`param_target`; the other compact families (CP here,
compact filters, structured matrices) pick their knob so the model lands nearest
it (:func:`nearest_knob`), so they all compare at matched parameter counts where
they can reach them."""

from __future__ import annotations

import math

import keras
import numpy as np

from tfcompress.bench.api import Compressed, MethodRun, register_method
from tfcompress.core.walk import walk_layers
from tfcompress.lowrank.decompositions import max_useful_rank
from tfcompress.lowrank.factorize import factorize_model

__all__ = ["factorizable_params", "nearest_knob", "param_target", "spatial_convs"]

LEVELS = (0.5, 0.3, 0.2, 0.1)  # also the targets of the other compact families
QUICK_LEVELS = (0.5, 0.2)
LEVEL_NAME = "kept fraction of factorizable params"


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
    levels=LEVELS,
    quick_levels=QUICK_LEVELS,
    level_name=LEVEL_NAME,
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


def param_target(model: keras.Model, level: float) -> int:
    """The total parameter count ``lowrank_svd`` aims at for ``level``."""
    return round(model.count_params() - (1.0 - level) * factorizable_params(model))


def nearest_knob(counts: dict, target: int):
    """The knob whose parameter count is nearest ``target`` (ties: the smaller model)."""
    return min(counts, key=lambda knob: (abs(counts[knob] - target), counts[knob]))


def knob_notes(knob_name: str, knob, params: int, target: int, dense: int) -> str:
    return (
        f"{knob_name} {knob}: {params:,} parameters ({params / dense:.3f} x dense), "
        f"target {target:,} ({target / dense:.3f} x)"
    )


def spatial_convs(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """Ungrouped channels-last Conv2D layers (exact type) with a kernel larger than 1x1."""
    found = {}
    for name, layer in walk_layers(model):
        if (
            type(layer) is keras.layers.Conv2D
            and layer.groups == 1
            and max(layer.kernel_size) > 1
            and layer.data_format == "channels_last"
        ):
            found[name] = layer
    return found


def _cp_ranks(convs: dict[str, keras.layers.Layer], fraction: float) -> dict[str, int]:
    """Per layer, the CP rank whose weights are ``fraction`` of the kernel's."""
    ranks = {}
    for name, layer in convs.items():
        kh, kw, cin, cout = (int(d) for d in layer.kernel.shape)
        ranks[name] = max(1, math.floor(fraction * kh * kw * cin * cout / (cin + kh + kw + cout)))
    return ranks


def _cp_params(convs: dict[str, keras.layers.Layer], ranks: dict[str, int], total: int) -> int:
    for name, layer in convs.items():
        kh, kw, cin, cout = (int(d) for d in layer.kernel.shape)
        total += ranks[name] * (cin + kh + kw + cout) - kh * kw * cin * cout
    return total


@register_method(
    "lowrank_cp",
    family="lowrank",
    levels=LEVELS,
    quick_levels=QUICK_LEVELS,
    level_name=LEVEL_NAME,
    applies_to=("workload:digits_cnn",),
    description="factorize_model(conv_decomposition='cp'): KxK Conv2D kernels as rank-R CP "
    "chains (1x1, Kx1 and 1xK depthwise, 1x1; Lebedev et al. 2015), one kept fraction of "
    "every kernel nearest the parameter target, then fine-tune",
)
def lowrank_cp(model: keras.Model, run: MethodRun) -> Compressed:
    target = param_target(model, run.level)
    convs = spatial_convs(model)
    total = int(model.count_params())
    fractions = [float(f) for f in np.linspace(0.02, 0.98, 49)]
    counts = {f: _cp_params(convs, _cp_ranks(convs, f), total) for f in fractions}
    fraction = nearest_knob(counts, target)
    ranks = _cp_ranks(convs, fraction)
    small = factorize_model(
        model, rank=ranks, conv_decomposition="cp", layers=list(ranks), verbose=0
    )
    run.finetune(small)
    notes = knob_notes("kernel fraction", f"{fraction:.2f}", small.count_params(), target, total)
    return Compressed(small, export=None, notes=f"{notes}; CP ranks {ranks}")
