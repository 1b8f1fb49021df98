"""One-shot post-training methods (no fine-tuning): SparseGPT, exact OBS, M-FAC,
magnitude, GPTQ and round-to-nearest, from a few hundred calibration samples.

Every arm here uses no fine-tune budget; its baselines in the same run are
``magnitude_layer_no_ft`` (one-shot magnitude) and ``rtn`` (round to nearest).
Calibration: 128 sequences of 128 bytes for the language model, 512 training
images for the classifiers (enough input vectors for every Dense layer's
Hessian to be non-singular), drawn per seed.

Quantized classifiers get int8 activation ranges and export as full-integer
files, one weight step per tensor (the converter takes per-tensor ranges on
Dense only). The language model is quantized weight-only (as GPTQ is used on
LLMs), so its quality is the weights' alone; its full-integer file calibrates
the activations.
"""

from __future__ import annotations

import keras

from tfcompress.bench.api import Compressed, MethodRun, register_method
from tfcompress.bench.methods.common import pruned_layers

SPARSITIES = (0.5, 0.6, 0.7, 0.8)
QUICK_SPARSITIES = (0.5, 0.7)
BITS = (8, 4, 3, 2)
QUICK_BITS = (4, 3)
TASKS = ("classification", "language_model")


def _count(run: MethodRun) -> int:
    return 128 if run.workload.task == "language_model" else 512


def _calibration(run: MethodRun):
    return run.calibration(_count(run))


def _prune(model: keras.Model, run: MethodRun, method: str, pattern: str, sparsity: float):
    from tfcompress import oneshot

    layers = pruned_layers(run.workload)
    pruned = oneshot.prune(
        model,
        _calibration(run),
        sparsity=sparsity,
        pattern=pattern,
        method=method,
        layers=layers,
        verbose=0,
    )
    return Compressed(pruned, export=None)


@register_method(
    "sparsegpt",
    family="oneshot",
    levels=SPARSITIES,
    quick_levels=QUICK_SPARSITIES,
    level_name="sparsity",
    applies_to=TASKS,
    finetunes=False,
    description="SparseGPT one-shot unstructured pruning (Frantar & Alistarh 2023), no fine-tune",
)
def sparsegpt(model: keras.Model, run: MethodRun) -> Compressed:
    return _prune(model, run, "sparsegpt", "unstructured", run.level)


@register_method(
    "sparsegpt_nm",
    family="oneshot",
    levels=("2:4", "4:8", "1:4", "2:8"),
    quick_levels=("2:4", "4:8"),
    level_name="N:M",
    applies_to=TASKS,
    finetunes=False,
    description="SparseGPT one-shot N:M pruning, no fine-tune",
)
def sparsegpt_nm(model: keras.Model, run: MethodRun) -> Compressed:
    n, m = (int(v) for v in run.level.split(":"))
    return _prune(model, run, "sparsegpt", run.level, 1 - n / m)


@register_method(
    "magnitude_nm_no_ft",
    family="oneshot",
    levels=("2:4", "4:8", "1:4", "2:8"),
    quick_levels=("2:4", "4:8"),
    level_name="N:M",
    applies_to=TASKS,
    finetunes=False,
    description="one-shot magnitude N:M pruning, no fine-tune (SparseGPT's N:M baseline)",
)
def magnitude_nm(model: keras.Model, run: MethodRun) -> Compressed:
    n, m = (int(v) for v in run.level.split(":"))
    return _prune(model, run, "magnitude", run.level, 1 - n / m)


@register_method(
    "mfac",
    family="oneshot",
    levels=SPARSITIES,
    quick_levels=QUICK_SPARSITIES,
    level_name="sparsity",
    applies_to=("classification",),
    finetunes=False,
    description="M-FAC/WoodFisher global one-shot pruning (Frantar et al. 2021), no fine-tune",
)
def mfac(model: keras.Model, run: MethodRun) -> Compressed:
    from tfcompress import oneshot

    pruned = oneshot.prune(
        model,
        run.calibration_pairs(_count(run)),
        sparsity=run.level,
        method="mfac",
        layers=pruned_layers(run.workload),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        verbose=0,
    )
    return Compressed(pruned, export=None)


def _quantize(model: keras.Model, run: MethodRun, method: str) -> Compressed:
    from tfcompress import oneshot

    language_model = run.workload.task == "language_model"
    quant = oneshot.quantize(
        model,
        _calibration(run),
        bits=run.level,
        method=method,
        per_channel=False,
        layers=pruned_layers(run.workload),
        activations=not language_model,
        verbose=0,
    )
    # The LM's file: the attention, LayerNorm and activations get calibrated int8 ranges (a
    # "dynamic" file of fake-quantized weights stays float32: 2.78 MB instead of 0.80 MB).
    return Compressed(quant, export="int8", calibrate=language_model)


@register_method(
    "gptq",
    family="oneshot",
    levels=BITS,
    quick_levels=QUICK_BITS,
    level_name="bits",
    applies_to=TASKS,
    finetunes=False,
    description="GPTQ one-shot weight quantization, per tensor (Frantar et al. 2023), no fine-tune",
)
def gptq(model: keras.Model, run: MethodRun) -> Compressed:
    return _quantize(model, run, "gptq")


@register_method(
    "rtn",
    family="oneshot",
    levels=BITS,
    quick_levels=QUICK_BITS,
    level_name="bits",
    applies_to=TASKS,
    finetunes=False,
    description="round-to-nearest weight quantization, per tensor (GPTQ's baseline)",
)
def rtn(model: keras.Model, run: MethodRun) -> Compressed:
    return _quantize(model, run, "rtn")
