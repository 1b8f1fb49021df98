"""Distillation on the suite's workloads: the ``magnitude_layer`` baseline (layer-wise
magnitude pruning once, fine-tune with the zeros kept) with the trained dense model
as a ``DistillationTeacher`` during the same fine-tune budget, so the two curves
differ by the teacher alone."""

from __future__ import annotations

import keras

from tfcompress.bench.api import Compressed, MethodRun, register_method
from tfcompress.bench.methods.common import prune_once, pruned_layers
from tfcompress.distillation.teacher import DistillationTeacher
from tfcompress.pruning.callbacks import KeepSparsity

__all__: list[str] = []

# Not tuned per workload: T=4 / alpha=0.5 is what docs/distillation.md chose on held-out
# digits; a softer T=2 for the language model's 256-way next-byte distribution.
TEMPERATURE = {"classification": 4.0, "language_model": 2.0}
ALPHA = 0.5


@register_method(
    "distill_magnitude",
    relative_cost=1.5,
    family="distillation",
    levels=(0.5, 0.7, 0.8, 0.9),
    quick_levels=(0.5, 0.9),
    level_name="sparsity",
    applies_to=("classification", "language_model"),
    description="magnitude_layer pruning fine-tuned with the dense model as DistillationTeacher "
    "(Hinton et al. 2015; T=4, 2 for the LM, alpha=0.5)",
)
def distill_magnitude(model: keras.Model, run: MethodRun) -> Compressed:
    layers = pruned_layers(run.workload)
    student = prune_once(model, run.level, layers=layers, scope="layer")
    # The teacher is the trained model itself: it only runs forward (training=False).
    teacher = DistillationTeacher(model, temperature=TEMPERATURE[run.workload.task], alpha=ALPHA)
    run.finetune(student, callbacks=[KeepSparsity(layers=layers), teacher])
    return Compressed(student, export=None)
