"""Mixed precision for a file-size budget (``tfc.allocate.bits``), no fine-tune.

The level is the file-size budget as a multiple of the uniform 4-bit file: at level 1.0 ``mixed_bits`` and ``gptq`` at 4 bits
(the same GPTQ, per tensor, the same calibration) compare at the same file size.
Errors are the calibration loss increase when one layer alone takes a width
(512 training images or 128 byte windows with their targets); widths 2, 4 and
8 (2-bit Dense weights are INT2 tensors in the file, 2-bit convolutions INT4).
The language model is quantized weight-only, like ``gptq``; its file
calibrates the activations. The 4-bit file's bytes and the per-layer costs and
errors do not depend on the level: they are measured in the first level's arm
of each starting model and re-solved (``BitsPlan.with_budget``) for the others.
A level whose budget is below the smallest file the widths reach (the
MobileNet-style model at 0.9, found by a full run) gets that smallest plan,
said in the arm's notes.
"""

from __future__ import annotations

import math
import os
import tempfile

import keras

from tfcompress.bench.api import Compressed, MethodRun, register_method
from tfcompress.bench.methods.common import measured_once, pruned_layers
from tfcompress.export.tflite import export

TASKS = ("classification", "language_model")


def _measure(model: keras.Model, run: MethodRun, count: int, language_model: bool):
    """The plan's per-layer costs and errors, and the uniform 4-bit file's bytes."""
    from tfcompress import allocation, oneshot

    x, y = run.calibration_pairs(count)
    layers = pruned_layers(run.workload)
    # The uniform 4-bit file's bytes: its weights are rounded to nearest (bytes do not depend
    # on the rounding), with the activation ranges the arm's own file will have.
    four = oneshot.quantize(
        model,
        x,
        bits=4,
        method="rtn",
        per_channel=False,
        layers=layers,
        activations=not language_model,
        verbose=0,
    )
    with tempfile.TemporaryDirectory() as folder:
        four_bytes = export(
            four,
            os.path.join(folder, "four.tflite"),
            quantization="int8",
            representative_data=x,
            verify=False,
            verbose=0,
        ).bytes
    plan = allocation.bits(
        model,
        x,
        target_bytes=four_bytes,
        choices=(2, 4, 8),
        error="loss",
        targets=y,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        per_channel=False,
        activations=not language_model,
        layers=layers,
        verbose=0,
    )
    return plan, four_bytes


@register_method(
    "mixed_bits",
    relative_cost=3,
    family="allocation",
    levels=(1.5, 1.25, 1.0, 0.9),
    quick_levels=(1.0, 0.9),
    level_name="x 4-bit file",
    applies_to=TASKS,
    finetunes=False,
    description="tfc.allocate.bits: 2/4/8-bit GPTQ per layer within a multiple of the uniform "
    "4-bit file's bytes (loss-increase errors, exact knapsack), no fine-tune",
)
def mixed_bits(model: keras.Model, run: MethodRun) -> Compressed:
    from tfcompress import allocation

    language_model = run.workload.task == "language_model"
    count = 128 if language_model else 512

    def measure() -> tuple[allocation.BitsPlan, int]:
        return _measure(model, run, count, language_model)

    # The costs and errors do not depend on the budget: measured in the first level's arm of
    # each starting model, re-solved for every other level.
    (measured, four_bytes), reused = measured_once(
        f"mixed_bits/{count}/seed {run.seed}", model, measure
    )
    budget = int(run.level * four_bytes)
    # A budget below the smallest file the widths reach (every layer at its narrowest) is
    # answered with that smallest plan, said in the notes; the arm's bytes are measured.
    smallest = measured.smallest_cost
    plan = measured.with_budget(max(budget, math.ceil(smallest)))
    quant = plan.apply(model)
    counts = {b: sum(1 for c in plan.choices.values() if c == b) for b in (2, 4, 8)}
    notes = (
        f"layers at 2/4/8 bits: {counts[2]}/{counts[4]}/{counts[8]}; predicted "
        f"{plan.total_cost:,.0f} B of a {plan.budget:,.0f} B budget (uniform 4-bit file "
        f"{four_bytes:,} B)"
    )
    if budget < smallest:
        notes += (
            f"; the {budget:,} B budget is below the smallest file these widths reach "
            f"({smallest:,.0f} B): that smallest plan is used"
        )
    if reused:
        notes += "; costs and errors measured in an earlier level's arm (same starting model)"
    return Compressed(quant, export="int8", calibrate=language_model, notes=notes)
