"""Quantization-aware training on the suite's workloads: ``quantize_model`` with the
project's weight-bit presets, fine-tuned with the workload's budget, exported as a
full-integer TFLite file: with the ranges learned in training, plus calibration
data for the layers quantize_model leaves float (the language model's attention,
LayerNorm and embeddings)."""

from __future__ import annotations

import warnings

import keras

from tfcompress.bench.api import Compressed, MethodRun, register_method
from tfcompress.quantization.quantize_model import quantize_model

__all__: list[str] = []

# Names of CONFIG_NAMES (the weight bits of quantize_model's presets), mild to strong.
QAT_LEVELS = ("int8", "int4", "int3", "int2")


@register_method(
    "qat",
    relative_cost=1.5,
    family="quantization",
    levels=QAT_LEVELS,
    quick_levels=("int8", "int4"),
    level_name="weight bits",
    applies_to=("classification", "language_model"),
    description="quantize_model QAT (weights on a 2-8 bit grid, int8 activations; Jacob et al. "
    "2018), fine-tune, full-int8 TFLite; layers without an int8 rule (attention, LayerNorm, "
    "Embedding) stay float",
)
def qat(model: keras.Model, run: MethodRun) -> Compressed:
    # quantize_model copies the model; the trained one is not changed. The layers it
    # leaves float (its UserWarning, once per arm) go to the arm's notes instead.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="quantize_model left", category=UserWarning)
        quantized, log = quantize_model(model, run.level, return_log=True)
    run.finetune(quantized)
    notes = ""
    if log.skipped:
        float_layers = sorted({entry.kind for entry in log.skipped})
        notes = f"left float: {len(log.skipped)} layers ({', '.join(float_layers)})"
    # Layers left float need calibrated ranges, or the converter keeps the matmuls float too.
    return Compressed(quantized, export="int8", notes=notes, calibrate=bool(log.skipped))
