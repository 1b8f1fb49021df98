"""Baselines on every workload where they apply (ShrinkBench's recommendation):
random pruning, global and layer-wise magnitude pruning (one shot, then the
workload's fine-tune with the zeros kept), and TFLite post-training
quantization (dynamic range, full int8, float16) without any training."""

from __future__ import annotations

import keras

from tfcompress.bench.api import Compressed, MethodRun, register_method
from tfcompress.bench.methods.common import RandomCriterion, copy_model, prune_once, pruned_layers
from tfcompress.pruning.callbacks import KeepSparsity

SPARSITIES = (0.5, 0.7, 0.8, 0.9)
QUICK_SPARSITIES = (0.5, 0.9)
PRUNED_TASKS = ("classification", "language_model")


def _prune_and_finetune(model: keras.Model, run: MethodRun, **kwargs) -> Compressed:
    layers = pruned_layers(run.workload)
    pruned = prune_once(model, run.level, layers=layers, **kwargs)
    run.finetune(pruned, callbacks=[KeepSparsity(layers=layers)])
    return Compressed(pruned, export=None)


@register_method(
    "random",
    family="baseline",
    levels=SPARSITIES,
    quick_levels=QUICK_SPARSITIES,
    level_name="sparsity",
    applies_to=PRUNED_TASKS,
    description="random unstructured pruning per layer, then fine-tune (sanity baseline)",
)
def random_pruning(model: keras.Model, run: MethodRun) -> Compressed:
    return _prune_and_finetune(model, run, criterion=RandomCriterion(run.seed))


@register_method(
    "magnitude_global",
    family="baseline",
    levels=SPARSITIES,
    quick_levels=QUICK_SPARSITIES,
    level_name="sparsity",
    applies_to=PRUNED_TASKS,
    description="global magnitude pruning (one ranking over all layers), then fine-tune",
)
def global_magnitude(model: keras.Model, run: MethodRun) -> Compressed:
    return _prune_and_finetune(model, run, scope="global")


@register_method(
    "magnitude_layer",
    family="baseline",
    levels=SPARSITIES,
    quick_levels=QUICK_SPARSITIES,
    level_name="sparsity",
    applies_to=PRUNED_TASKS,
    description="layer-wise magnitude pruning (same sparsity in every layer), then fine-tune",
)
def layer_magnitude(model: keras.Model, run: MethodRun) -> Compressed:
    return _prune_and_finetune(model, run, scope="layer")


@register_method(
    "magnitude_layer_no_ft",
    relative_cost=0.4,
    family="baseline",
    levels=SPARSITIES,
    quick_levels=QUICK_SPARSITIES,
    level_name="sparsity",
    applies_to=PRUNED_TASKS,
    finetunes=False,
    description="layer-wise magnitude pruning, no fine-tune (the one-shot baseline)",
)
def layer_magnitude_oneshot(model: keras.Model, run: MethodRun) -> Compressed:
    return Compressed(prune_once(model, run.level, layers=pruned_layers(run.workload)), export=None)


@register_method(
    "tflite_ptq",
    relative_cost=0.3,
    family="baseline",
    levels=("float16", "dynamic", "int8"),
    quick_levels=("dynamic", "int8"),
    level_name="tflite mode",
    applies_to=("classification", "language_model", "latency"),
    finetunes=False,
    description="TFLite post-training quantization of the trained model (no training)",
)
def tflite_ptq(model: keras.Model, run: MethodRun) -> Compressed:
    return Compressed(copy_model(model), export=run.level)
