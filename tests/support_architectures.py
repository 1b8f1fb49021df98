"""Tiny builders of the architectures the support matrix covers, with learnable data.

Each builder returns an untrained, built model; :func:`make_data` returns a
small synthetic split for it with a signal a few steps can start to learn
(class prototypes plus noise for images, a class token at a random position
for text). Everything is sized to keep one matrix cell to seconds on a CPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np

__all__ = ["ARCHITECTURES", "Architecture", "build", "make_data"]

IMAGE_CLASSES = 10
TEXT_CLASSES = 4
VOCAB = 32
SEQ_LEN = 12


@keras.saving.register_keras_serializable(package="tfcompress_tests")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position to a (batch, length, dim) input."""

    def __init__(self, length: int, **kwargs):
        super().__init__(**kwargs)
        self.length = length

    def build(self, input_shape):
        self.positions = self.add_weight(
            shape=(self.length, input_shape[-1]), initializer="random_normal", name="positions"
        )

    def call(self, inputs):
        return inputs + self.positions

    def get_config(self):
        return {**super().get_config(), "length": self.length}


@keras.saving.register_keras_serializable(package="tfcompress_tests")
class SubclassedCNN(keras.Model):
    """A small CNN written as a ``keras.Model`` subclass (no functional graph)."""

    def __init__(self, classes: int = IMAGE_CLASSES, **kwargs):
        super().__init__(**kwargs)
        self.classes = classes
        self.conv1 = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")
        self.conv2 = keras.layers.Conv2D(16, 3, activation="relu", name="conv2")
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.hidden = keras.layers.Dense(16, activation="relu", name="hidden")
        self.logits = keras.layers.Dense(classes, name="logits")

    def call(self, inputs):
        x = self.conv2(self.conv1(inputs))
        return self.logits(self.hidden(self.pool(x)))

    def get_config(self):
        return {**super().get_config(), "classes": self.classes}


def _inverted_residual(x, expand: int, out: int, stride: int, name: str):
    """MobileNetV2's block: 1x1 expand, 3x3 depthwise, 1x1 linear project (+ add)."""
    inputs = x
    x = keras.layers.Conv2D(expand, 1, use_bias=False, name=f"{name}_expand")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_expand_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_expand_relu")(x)
    if stride == 2:
        x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_pad")(x)
    padding = "valid" if stride == 2 else "same"
    x = keras.layers.DepthwiseConv2D(
        3, strides=stride, padding=padding, use_bias=False, name=f"{name}_depthwise"
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_depthwise_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_depthwise_relu")(x)
    x = keras.layers.Conv2D(out, 1, use_bias=False, name=f"{name}_project")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_project_bn")(x)
    if stride == 1 and inputs.shape[-1] == out:
        x = keras.layers.Add(name=f"{name}_add")([inputs, x])
    return x


def mobilenet_v2_blocks() -> keras.Model:
    """The layer kinds and wiring of MobileNetV2 in 3 blocks: what CI can afford per cell."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(6.0, name="stem_relu")(x)
    x = _inverted_residual(x, 16, 8, 1, "block1")
    x = _inverted_residual(x, 24, 12, 2, "block2")
    x = _inverted_residual(x, 36, 12, 1, "block3")
    x = keras.layers.Conv2D(32, 1, use_bias=False, name="head")(x)
    x = keras.layers.BatchNormalization(name="head_bn")(x)
    x = keras.layers.ReLU(6.0, name="head_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(IMAGE_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2_blocks")


def mobilenet_v2() -> keras.Model:
    # Keras warns that 32x32 is not a size with pretrained weights; weights=None needs none.
    return keras.applications.MobileNetV2(
        input_shape=(32, 32, 3),
        alpha=0.35,
        weights=None,
        classes=IMAGE_CLASSES,
        classifier_activation=None,
    )


def _res_block(x, filters: int, stride: int, name: str):
    shortcut = x
    y = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                            name=f"{name}_conv1")(x)  # fmt: skip
    y = keras.layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                       name=f"{name}_proj")(shortcut)  # fmt: skip
        shortcut = keras.layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def resnet() -> keras.Model:
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = _res_block(x, 8, 1, "block1")
    x = _res_block(x, 16, 2, "block2")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(IMAGE_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name="resnet")


def transformer() -> keras.Model:
    dim = 16
    inputs = keras.Input((SEQ_LEN,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, dim, name="tokens")(inputs)
    x = PositionEmbedding(SEQ_LEN, name="positions")(x)
    attention = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, name="attention")(x, x)
    x = keras.layers.LayerNormalization(name="norm1")(keras.layers.Add(name="add1")([x, attention]))
    y = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 32), bias_axes="d",
                                 activation="relu", name="ffn_up")(x)  # fmt: skip
    y = keras.layers.Dense(dim, name="ffn_down")(y)
    x = keras.layers.LayerNormalization(name="norm2")(keras.layers.Add(name="add2")([x, y]))
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = keras.layers.Dense(TEXT_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name="transformer")


def _rnn(layer: keras.layers.Layer, name: str) -> keras.Model:
    inputs = keras.Input((SEQ_LEN,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, 8, name="tokens")(inputs)
    x = layer(x)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(TEXT_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def lstm() -> keras.Model:
    return _rnn(keras.layers.LSTM(16, name="lstm"), "lstm_classifier")


def gru() -> keras.Model:
    return _rnn(keras.layers.GRU(16, name="gru"), "gru_classifier")


def nested() -> keras.Model:
    features = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, padding="same", name="conv1"),
            keras.layers.ReLU(name="relu1"),
            keras.layers.Conv2D(16, 3, name="conv2"),
            keras.layers.ReLU(name="relu2"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
        ],
        name="features",
    )
    inputs = keras.Input((8, 8, 1))
    x = features(inputs)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(IMAGE_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name="outer")


def subclassed() -> keras.Model:
    model = SubclassedCNN(name="subclassed")
    model(np.zeros((1, 8, 8, 1), "float32"))
    return model


@dataclasses.dataclass(frozen=True)
class Architecture:
    name: str
    build: Callable[[], keras.Model]
    input_shape: tuple[int, ...]  # one example; int inputs for text
    text: bool = False

    @property
    def classes(self) -> int:
        return TEXT_CLASSES if self.text else IMAGE_CLASSES


ARCHITECTURES = {
    a.name: a
    for a in (
        Architecture("mobilenet_v2_blocks", mobilenet_v2_blocks, (32, 32, 3)),
        Architecture("mobilenet_v2", mobilenet_v2, (32, 32, 3)),
        Architecture("resnet", resnet, (16, 16, 3)),
        Architecture("transformer", transformer, (SEQ_LEN,), text=True),
        Architecture("lstm", lstm, (SEQ_LEN,), text=True),
        Architecture("gru", gru, (SEQ_LEN,), text=True),
        Architecture("nested", nested, (8, 8, 1)),
        Architecture("subclassed", subclassed, (8, 8, 1)),
    )
}


def build(name: str, seed: int = 0) -> keras.Model:
    """The architecture ``name``, freshly initialised from ``seed``."""
    keras.utils.set_random_seed(seed)
    return ARCHITECTURES[name].build()


def make_data(name: str, n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` for architecture ``name``: ``n`` examples with a learnable label."""
    arch = ARCHITECTURES[name]
    rng = np.random.default_rng(seed)
    y = rng.integers(0, arch.classes, n)
    if arch.text:
        # Noise tokens from the upper half of the vocabulary, one class token anywhere.
        x = rng.integers(VOCAB // 2, VOCAB, (n, SEQ_LEN))
        x[np.arange(n), rng.integers(0, SEQ_LEN, n)] = 1 + y
        return x.astype("int32"), y.astype("int32")
    prototypes = np.random.default_rng(1234).uniform(0, 1, (arch.classes, *arch.input_shape))
    x = 0.7 * prototypes[y] + 0.3 * rng.uniform(0, 1, (n, *arch.input_shape))
    return x.astype("float32"), y.astype("int32")
