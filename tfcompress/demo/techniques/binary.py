"""Demo rows for binary networks."""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras

from tfcompress.demo.runner import DemoContext, Technique, TechniqueResult
from tfcompress.models import digits_binary_cnn, digits_float_twin

# digits_float_twin stays importable from here for scripts written against the demo.
__all__ = ["TECHNIQUES", "digits_float_twin"]


def _packed_bytes(model: keras.Model) -> int:
    from tfcompress.packing import save_packed

    with tempfile.TemporaryDirectory() as tmp:
        return save_packed(model, Path(tmp) / "model.npz").file_bytes


def _binary_weights(ctx: DemoContext) -> TechniqueResult:
    from tfcompress.binary.binarize import binarize_model
    from tfcompress.models import train_classifier

    model = binarize_model(ctx.float_model)
    if ctx.epochs:
        train_classifier(model, ctx.data, epochs=ctx.epochs, learning_rate=1e-3)
    return TechniqueResult(
        model,
        quantization="dynamic",
        note="binarize_model: 1-bit weights (hidden layers), int8 +-scale in TFLite",
        stored_bytes=_packed_bytes(model),
    )


def _binary_cnn(ctx: DemoContext) -> TechniqueResult:
    from tfcompress.models import train_classifier

    model = digits_binary_cnn(ctx.data.input_shape)
    train_classifier(model, ctx.data, epochs=max(4, 2 * ctx.epochs), learning_rate=1e-2)
    return TechniqueResult(
        model,
        quantization="dynamic",
        note="BNN from scratch: binary weights+activations (hidden), int8 +-scale in TFLite",
        stored_bytes=_packed_bytes(model),
    )


# The BNN-from-scratch recipe (_binary_cnn) needs ~6 epochs, too slow for a demo row;
# benchmarks/binary.py measures it.
TECHNIQUES = [
    Technique("binary weights", _binary_weights, order=70),
]
