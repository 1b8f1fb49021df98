"""Low-rank factorization: truncated-SVD factors at half the parameters, fine-tuned."""

from __future__ import annotations

import keras

from tfcompress.demo.runner import DemoContext, Technique, TechniqueResult
from tfcompress.lowrank.factorize import factorize_model
from tfcompress.models import train_classifier

TARGET_RATIO = 0.5

# The float32 and int8 rows share one factorized, fine-tuned model per demo run.
_cache: dict[int, keras.Model] = {}


def _factorized(ctx: DemoContext) -> keras.Model:
    key = id(ctx.float_model)
    if key not in _cache:
        _cache.clear()
        model = factorize_model(ctx.float_model, target_ratio=TARGET_RATIO, verbose=0)
        if ctx.epochs:
            train_classifier(model, ctx.data, epochs=ctx.epochs, batch_size=64, learning_rate=1e-3)
        _cache[key] = model
    return _cache[key]


def _lowrank(ctx: DemoContext) -> TechniqueResult:
    model = _factorized(ctx)
    return TechniqueResult(
        model, note=f"{model.count_params() / ctx.float_model.count_params():.2f}x params, SVD"
    )


def _lowrank_int8(ctx: DemoContext) -> TechniqueResult:
    return TechniqueResult(
        _factorized(ctx), quantization="int8", calibrate=True, note="low-rank + int8 PTQ"
    )


TECHNIQUES = [
    Technique(f"low-rank {TARGET_RATIO}x", _lowrank, order=60),
    Technique(f"low-rank {TARGET_RATIO}x + int8", _lowrank_int8, order=61),
]
