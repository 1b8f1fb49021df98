"""Binary and ternary weights on the suite's classifiers: ``binarize_model`` on the trained
model (latent weights = the trained kernels, per-channel scales kept), fine-tuned
with the workload's budget (Adam on the latent weights: the recipe for converted
models; Bop needs unscaled +-1 kernels, which a converted model does not start
near), exported as TFLite dynamic-range int8 (the project's binary export path: each
binary kernel folds to +-scale, stored in int8)."""

from __future__ import annotations

import keras

from tfcompress.bench.api import Compressed, MethodRun, register_method
from tfcompress.binary.binarize import binarize_model

__all__: list[str] = []

# level -> (kernel quantizer, keep the first layer float, keep the last layer float)
LEVELS = {
    "ternary_hidden": ("ste_tern", True, True),
    "binary_hidden": ("magnitude_aware_sign", True, True),
    "binary_all_but_last": ("magnitude_aware_sign", False, True),
    "binary_all": ("magnitude_aware_sign", False, False),
}


@register_method(
    "binarize",
    family="binary",
    levels=tuple(LEVELS),
    quick_levels=("binary_hidden", "binary_all"),
    level_name="binarized layers",
    applies_to=("classification",),
    description="binarize_model: XNOR-Net scaled sign weights (Rastegari et al. 2016; ternary: "
    "TWN, Li et al. 2016) on hidden / all-but-last / all Dense+Conv layers, fine-tune, "
    "dynamic-int8 TFLite",
)
def binarize(model: keras.Model, run: MethodRun) -> Compressed:
    quantizer, keep_first, keep_last = LEVELS[run.level]
    binary = binarize_model(
        model, kernel_quantizer=quantizer, keep_first=keep_first, keep_last=keep_last
    )
    run.finetune(binary)
    return Compressed(binary, export="dynamic")
