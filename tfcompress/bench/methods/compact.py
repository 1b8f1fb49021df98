"""Transferred and compact convolutional filters on the suite, at ``lowrank_svd``'s parameter counts.

Each level is ``lowrank_svd``'s (the kept fraction of the factorizable
parameters, :func:`~tfcompress.bench.methods.lowrank.param_target`); a method
picks its knob (a group, a rank) so the converted model's parameter count is the
nearest it can reach. These families convert KxK convolutions only, so at strong
levels they may stay above the target: the notes give the reached and the
target counts, and every figure places an arm at its own count. Then the
workload's fine-tune budget, as every arm has it.

The MobileNetV2-style workload has a single KxK full convolution (the stem, 144
weights; its other KxK convolutions are depthwise), so these methods run on the
digits CNN only.
"""

from __future__ import annotations

import math

import keras

from tfcompress.bench.api import Compressed, MethodRun, register_method
from tfcompress.bench.methods.distillation import ALPHA, TEMPERATURE
from tfcompress.bench.methods.lowrank import (
    LEVEL_NAME,
    LEVELS,
    QUICK_LEVELS,
    knob_notes,
    nearest_knob,
    param_target,
    spatial_convs,
)
from tfcompress.compact.replace import compact_model
from tfcompress.compact.transferred import GROUPS
from tfcompress.compact.transferred_convert import to_transferred
from tfcompress.distillation.teacher import DistillationTeacher

FILTER_WORKLOADS = ("workload:digits_cnn",)


@register_method(
    "transferred_conv",
    family="compact filters",
    levels=LEVELS,
    quick_levels=QUICK_LEVELS,
    level_name=LEVEL_NAME,
    applies_to=FILTER_WORKLOADS,
    description="to_transferred: KxK Conv2D filters as a learned base set under flips / "
    "rotations / D4 (Cohen & Welling 2016), the group nearest the parameter target, "
    "least-squares projection, then fine-tune",
)
def transferred_conv(model: keras.Model, run: MethodRun) -> Compressed:
    target = param_target(model, run.level)
    converted = {
        group: to_transferred(model, group=group, verbose=0)
        for group in ("flips", "rotations", "d4")
        if group in GROUPS
    }
    group = nearest_knob({g: m.count_params() for g, m in converted.items()}, target)
    small = converted[group]
    run.finetune(small)
    dense = model.count_params()
    return Compressed(
        small, export=None, notes=knob_notes("group", group, small.count_params(), target, dense)
    )


def _block_params(kind: str, shape: tuple[int, ...], knob) -> int:
    """Kernel weights of one compact block (``docs/compact.md``'s formulas; biases unchanged)."""
    kh, kw, cin, cout = shape
    if kind == "separable":
        rank = min(knob, kh * kw, cout)
        return kh * kw * cin * rank + cin * rank * cout
    if kind == "flattened":
        return knob * cout * (cin + kh + kw)
    squeeze = min(max(1, round(knob * cout)), cin)
    e3 = round(0.5 * cout)  # compact_model's default kxk_fraction
    return cin * squeeze + squeeze * (cout - e3) + kh * kw * squeeze * e3


_KNOBS = {
    "separable": ("rank", tuple(range(1, 10))),
    "flattened": ("rank", tuple(range(1, 17))),
    "fire": ("squeeze_ratio", tuple(round(0.05 * i, 2) for i in range(1, 21))),
}


def _compact(kind: str, model: keras.Model, run: MethodRun) -> Compressed:
    target = param_target(model, run.level)
    convs = spatial_convs(model)
    total = int(model.count_params())
    shapes = {name: tuple(int(d) for d in layer.kernel.shape) for name, layer in convs.items()}
    kernels = sum(math.prod(shape) for shape in shapes.values())
    knob_name, grid = _KNOBS[kind]
    counts = {
        knob: total - kernels + sum(_block_params(kind, s, knob) for s in shapes.values())
        for knob in grid
    }
    knob = nearest_knob(counts, target)
    small = compact_model(model, kind, layers=list(convs), **{knob_name: knob}, verbose=0)
    teacher = DistillationTeacher(model, temperature=TEMPERATURE[run.workload.task], alpha=ALPHA)
    run.finetune(small, callbacks=[teacher])
    notes = knob_notes(knob_name, knob, small.count_params(), target, total)
    return Compressed(small, export=None, notes=f"{notes}; teacher: the dense model")


def _register_compact(kind: str, reference: str) -> None:
    register_method(
        f"compact_{kind}",
        family="compact filters",
        levels=LEVELS,
        quick_levels=QUICK_LEVELS,
        level_name=LEVEL_NAME,
        applies_to=FILTER_WORKLOADS,
        description=f"compact_model(kind='{kind}'): KxK Conv2D as {reference}, initialised "
        "from the trained kernel, the knob nearest the parameter target, then fine-tune with "
        "the dense model as DistillationTeacher",
    )(lambda model, run: _compact(kind, model, run))


_register_compact("separable", "depthwise + 1x1 (per-channel SVD; Howard et al. 2017)")
_register_compact("flattened", "1x1 + Kx1 + 1xK 1-D filters (per-filter CP; Jin et al. 2015)")
_register_compact("fire", "squeeze 1x1 + expand 1x1/KxK (SqueezeNet, Iandola et al. 2016)")
