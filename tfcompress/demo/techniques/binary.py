"""Demo rows for binary networks, and the binary digits CNN the tests and benchmark train."""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras

from tfcompress.demo.runner import DemoContext, Technique, TechniqueResult
from tfcompress.models import digits_binary_cnn  # re-exported: it used to live here

__all__ = ["TECHNIQUES", "digits_binary_cnn", "digits_float_twin"]


def digits_float_twin(input_shape: tuple[int, ...] = (8, 8, 1), num_classes: int = 10):
    """:func:`digits_binary_cnn` with every layer float and ReLU activations (the anchor)."""
    layers = keras.layers
    conv = {"padding": "same", "use_bias": False}
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(32, 3, name="conv1", **conv),
            layers.BatchNormalization(name="bn1"),
            layers.ReLU(),
            layers.Conv2D(64, 3, name="conv2", **conv),
            layers.BatchNormalization(name="bn2"),
            layers.ReLU(),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(128, 3, name="conv3", **conv),
            layers.BatchNormalization(name="bn3"),
            layers.ReLU(),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(128, use_bias=False, name="dense1"),
            layers.BatchNormalization(name="bn4"),
            layers.ReLU(),
            layers.Dense(num_classes, name="logits"),
        ],
        name="digits_float_twin",
    )


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
