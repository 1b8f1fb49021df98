"""Reference models that the demo, tests and benchmarks compress.

They are ordinary Keras models built from stock layers; every technique in
tfcompress is measured against them.
"""

from __future__ import annotations

import keras
import numpy as np

from tfcompress.datasets import Split

__all__ = [
    "accuracy",
    "digits_binary_cnn",
    "digits_cnn",
    "digits_float_twin",
    "digits_mlp",
    "train_classifier",
]


def digits_cnn(input_shape: tuple[int, ...] = (8, 8, 1), num_classes: int = 10) -> keras.Model:
    """The digits CNN: three 3x3 convolutions and two Dense layers (~160k parameters).

    It is large enough that TFLite's fixed per-file overhead does not hide the
    size of the weights, and small enough to train in seconds on 2 cores.

    Example:
        >>> model = tfcompress.models.digits_cnn()
        >>> model.count_params()
        159626
    """
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(2, name="pool1"),
            keras.layers.Conv2D(128, 3, padding="same", activation="relu", name="conv3"),
            keras.layers.MaxPooling2D(2, name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(128, activation="relu", name="dense1"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name="digits_cnn",
    )


def digits_binary_cnn(
    input_shape: tuple[int, ...] = (8, 8, 1),
    num_classes: int = 10,
    kernel_quantizer: str = "magnitude_aware_sign",
    input_quantizer: str = "ste_sign",
) -> keras.Model:
    """The digits CNN with binary weights and activations in its hidden layers.

    Same shape as :func:`digits_cnn` (conv 32/64/128,
    dense 128, logits); conv2, conv3 and dense1 are binary (weights and
    inputs), conv1 and the logits stay float. Each layer is followed by
    BatchNormalization (no bias), the usual recipe for binary nets.

    Example:
        >>> model = tfcompress.models.digits_binary_cnn()
        >>> tfcompress.models.train_classifier(model, data, epochs=15, learning_rate=1e-2)
    """
    from tfcompress.binary.layers import BinaryConv2D, BinaryDense

    binary = {
        "padding": "same",
        "use_bias": False,
        "kernel_quantizer": kernel_quantizer,
        "input_quantizer": input_quantizer,
    }
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(32, 3, padding="same", use_bias=False, name="conv1"),
            layers.BatchNormalization(name="bn1"),
            BinaryConv2D(64, 3, name="conv2", **binary),
            layers.BatchNormalization(name="bn2"),
            layers.MaxPooling2D(2, name="pool1"),
            BinaryConv2D(128, 3, name="conv3", **binary),
            layers.BatchNormalization(name="bn3"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            BinaryDense(
                128,
                use_bias=False,
                kernel_quantizer=kernel_quantizer,
                input_quantizer=input_quantizer,
                name="dense1",
            ),
            layers.BatchNormalization(name="bn4"),
            layers.Dense(num_classes, name="logits"),
        ],
        name="digits_binary_cnn",
    )


def digits_float_twin(
    input_shape: tuple[int, ...] = (8, 8, 1), num_classes: int = 10
) -> keras.Model:
    """:func:`digits_binary_cnn` with every layer float and ReLU activations.

    The float anchor that binary networks are compared against: the same
    shapes and BatchNorm placement, so accuracy and size differences come from
    binarization alone.

    Args:
        input_shape: Input image shape.
        num_classes: Output classes.

    Returns:
        An uncompiled ``keras.Sequential`` model.

    Example:
        >>> model = tfcompress.models.digits_float_twin()
    """
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


def digits_mlp(
    hidden: tuple[int, ...] = (300, 100), input_dim: int = 64, num_classes: int = 10
) -> keras.Model:
    """An MLP on flattened digits; the default is LeNet-300-100 (64-300-100-10).

    Example:
        >>> tfcompress.models.digits_mlp().count_params()
        50610
    """
    layers: list[keras.layers.Layer] = [keras.Input((input_dim,))]
    for i, units in enumerate(hidden):
        layers.append(keras.layers.Dense(units, activation="relu", name=f"dense{i + 1}"))
    layers.append(keras.layers.Dense(num_classes, name="logits"))
    return keras.Sequential(layers, name="digits_mlp")


def train_classifier(
    model: keras.Model,
    data: Split,
    epochs: int = 10,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    verbose: int | str = 2,
    callbacks: list[keras.callbacks.Callback] | None = None,
    compile_model: bool = True,
) -> keras.callbacks.History:
    """Compiles (Adam, logits cross-entropy, accuracy) and fits ``model`` on ``data``.

    Prints one line per epoch by default (``verbose=2``), so a long run is never
    silent; ``verbose=0`` trains quietly, ``1`` shows a progress bar.
    """
    if compile_model:
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    return model.fit(
        data.x_train,
        data.y_train,
        epochs=epochs,
        batch_size=batch_size,
        verbose=verbose,
        callbacks=callbacks or [],
    )


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` (logits or probabilities) on ``(x, y)``."""
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))
