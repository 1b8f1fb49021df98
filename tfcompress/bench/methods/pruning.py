"""tfcompress's pruning methods on the suite's workloads, each starting from the trained
model and using the workload's fine-tune budget: gradual magnitude pruning,
structured channel pruning made real by ``shrink_model``, N:M sparsity, dynamic
sparse training (RigL) and SNIP's connection sensitivity.

Every unstructured method prunes the layers the baselines prune
(:func:`~tfcompress.bench.methods.common.pruned_layers`), so their curves compare
with ``magnitude_layer`` at the same sparsity; models are exported as float
files (the exporter picks TFLite's sparse encoding when it is smaller).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tfcompress.bench.api import Compressed, MethodRun, register_method
from tfcompress.bench.methods.budget import budget_steps, schedule_steps
from tfcompress.bench.methods.common import copy_model, pruned_layers
from tfcompress.pruning.callbacks import GradualPruning
from tfcompress.pruning.channels import channel_prunable_layers
from tfcompress.pruning.masks import compute_masks
from tfcompress.pruning.shrink import shrink_model
from tfcompress.pruning.snip import prune_at_init
from tfcompress.pruning.sparse_training import DynamicSparseTraining

__all__ = ["channel_prunable_layers"]  # re-exported: moved to tfcompress.pruning.channels

SPARSITIES = (0.5, 0.7, 0.8, 0.9)
QUICK_SPARSITIES = (0.5, 0.9)
CHANNEL_FRACTIONS = (0.25, 0.5, 0.7, 0.8)
HEAD_FRACTIONS = (0.25, 0.5, 0.625, 0.75)  # of 4 heads per layer: 1, 2, 2, 3 pruned
PRUNED_TASKS = ("classification", "language_model")


@register_method(
    "gradual_magnitude",
    family="pruning",
    levels=SPARSITIES,
    quick_levels=QUICK_SPARSITIES,
    level_name="sparsity",
    applies_to=PRUNED_TASKS,
    description="GradualPruning: layer-wise magnitude, polynomial schedule reaching the target "
    "at 2/3 of the fine-tune (Zhu & Gupta 2017)",
)
def gradual_magnitude(model: keras.Model, run: MethodRun) -> Compressed:
    pruned = copy_model(model)
    end, frequency = schedule_steps(run.workload)
    pruning = GradualPruning(
        run.level,
        begin_step=0,
        end_step=end,
        frequency=frequency,
        layers=pruned_layers(run.workload),
    )
    run.finetune(pruned, callbacks=[pruning])
    return Compressed(pruned, export=None)


@register_method(
    "channel_shrink",
    family="pruning",
    levels=CHANNEL_FRACTIONS,
    quick_levels=(0.5, 0.8),
    level_name="channel fraction",
    applies_to=PRUNED_TASKS,
    description="GradualPruning granularity='channel' (L1 of filters, Li et al. 2017) on the "
    "layers shrink_model can remove channels from, then shrink_model: fewer MACs for real",
)
def channel_shrink(model: keras.Model, run: MethodRun) -> Compressed:
    pruned = copy_model(model)
    layers = channel_prunable_layers(pruned)
    end, frequency = schedule_steps(run.workload)
    pruning = GradualPruning(
        run.level,
        begin_step=0,
        end_step=end,
        frequency=frequency,
        granularity="channel",
        layers=layers,
    )
    run.finetune(pruned, callbacks=[pruning])
    small = shrink_model(pruned)
    return Compressed(small, export=None, notes=f"channel-pruned layers: {', '.join(layers)}")


@register_method(
    "heads_ffn_shrink",
    family="pruning",
    levels=HEAD_FRACTIONS,
    quick_levels=(0.5,),
    level_name="head and FFN fraction",
    applies_to=("language_model",),
    description="GradualPruning granularity='head' (whole attention heads by the L1 of their "
    "q/k/v/o slices, Michel et al. 2019) and 'channel' on the FFN neurons, at the same "
    "fraction, then shrink_model: fewer heads, narrower FFNs",
)
def heads_ffn_shrink(model: keras.Model, run: MethodRun) -> Compressed:
    pruned = copy_model(model)
    end, frequency = schedule_steps(run.workload)
    schedule = {"begin_step": 0, "end_step": end, "frequency": frequency}
    callbacks = [GradualPruning(run.level, granularity="head", **schedule)]
    ffn = channel_prunable_layers(pruned)
    if ffn:
        callbacks.append(GradualPruning(run.level, granularity="channel", layers=ffn, **schedule))
    run.finetune(pruned, callbacks=callbacks)
    small = shrink_model(pruned)
    heads = [
        f"{layer.name} {layer.num_heads}"
        for layer in small.layers
        if isinstance(layer, keras.layers.MultiHeadAttention)
    ]
    notes = f"heads kept: {', '.join(heads)}; FFN layers pruned: {', '.join(ffn) or 'none'}"
    return Compressed(small, export=None, notes=notes)


@register_method(
    "n_m_sparsity",
    family="pruning",
    levels=("2:4", "4:8", "1:4", "2:8"),  # sparsegpt_nm's levels, for one comparison
    quick_levels=("2:4", "1:4"),
    level_name="N:M pattern",
    applies_to=PRUNED_TASKS,
    description="GradualPruning to N:M fine-grained sparsity (N of every M weights along the "
    "input; 2:4 is the sparse-tensor-core pattern, Mishra et al. 2021)",
)
def n_m_sparsity(model: keras.Model, run: MethodRun) -> Compressed:
    pruned = copy_model(model)
    end, frequency = schedule_steps(run.workload)
    pruning = GradualPruning(
        None,
        begin_step=0,
        end_step=end,
        frequency=frequency,
        granularity=run.level,
        layers=pruned_layers(run.workload),
    )
    run.finetune(pruned, callbacks=[pruning])
    return Compressed(pruned, export=None)


class _MagnitudeStart(DynamicSparseTraining):
    """RigL whose starting masks keep each layer's largest weights instead of random ones.

    Starting from a trained model, RigL's random initial masks would throw
    away what training found; magnitude masks (RigL's own drop criterion) at
    the layers' ERK sparsities start from it instead.
    """

    def random_masks(self) -> list[np.ndarray]:
        return [
            compute_masks([value], sparsity, "unstructured", scope="layer")[0]
            for value, sparsity in zip(self.weight_values(), self.layer_sparsities)
        ]


@register_method(
    "rigl",
    relative_cost=2,
    family="pruning",
    levels=SPARSITIES,
    quick_levels=QUICK_SPARSITIES,
    level_name="sparsity",
    applies_to=PRUNED_TASKS,
    description="DynamicSparseTraining (RigL, Evci et al. 2020): ERK sparsities, magnitude "
    "start from the trained model, drop/regrow by gradient (256 images or 64 byte windows) over "
    "3/4 of the fine-tune",
)
def rigl(model: keras.Model, run: MethodRun) -> Compressed:
    pruned = copy_model(model)
    steps = budget_steps(run.workload)
    callback = _MagnitudeStart(
        run.level,
        distribution="erk",
        update_frequency=max(1, steps // 10),
        end_step=max(1, (3 * steps) // 4),
        # Regrowth ranks by one gradient per update: 256 images, or 64 byte windows (8,192
        # next-byte targets; 256 windows made the language model's arm 5x slower than
        # magnitude pruning's for the same ranking).
        data=run.calibration_pairs(64 if run.workload.task == "language_model" else 256),
        layers=pruned_layers(run.workload),
        seed=run.seed,
    )
    run.finetune(pruned, callbacks=[callback])
    return Compressed(pruned, export=None)


@register_method(
    "snip",
    relative_cost=2,
    family="pruning",
    levels=SPARSITIES,
    quick_levels=QUICK_SPARSITIES,
    level_name="sparsity",
    applies_to=PRUNED_TASKS,
    description="SNIP connection sensitivity |w dL/dw| on 256 training examples (Lee et al. "
    "2019), global, applied to the trained model, then fine-tune",
)
def snip(model: keras.Model, run: MethodRun) -> Compressed:
    pruned = copy_model(model)
    layers: Any = pruned_layers(run.workload)
    run.workload.compile_for_finetune(pruned)  # SNIP takes the compiled loss
    keep = prune_at_init(pruned, run.calibration_pairs(256), run.level, layers=layers)
    run.finetune(pruned, callbacks=[keep])
    return Compressed(pruned, export=None)
