"""The suite's workloads: digits CNN, LeNet-300-100, the byte-level language model,
MobileNetV2-style blocks on 32x32 digits (accuracy) and keras.applications
MobileNetV2 (size and latency only).

Every classifier workload uses the fixed, stratified 80/20 split of the bundled
digits (:func:`tfcompress.datasets.load_digits`, seed 0): 1,438 training and
359 test images; the seed of a run changes the starting model's initialisation
and the order of training batches, not the split. Trained starting models are
cached in memory per (workload, seed) for the run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfcompress import models
from tfcompress.bench.api import Workload
from tfcompress.core.io import atomic_write
from tfcompress.datasets import Split, load_digits, load_text_corpus
from tfcompress.language_model import (
    bits_per_byte,
    eval_windows,
    gzip_bits_per_byte,
    load_byte_lm,
    sample_windows,
    shipped_lm_record,
)

__all__ = [
    "ClassifierWorkload",
    "LanguageModelWorkload",
    "LatencyWorkload",
    "get_workload",
    "list_workloads",
    "mobilenet_style",
]


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def build_optimizer(model: keras.Model) -> None:
    """Creates the compiled optimizer's variables before ``fit``.

    Left to ``fit``, the TensorFlow backend creates them inside the first
    trace of the train step, and TensorFlow then traces the step a second
    time: 2.5-3.5 s per fine-tune on the MobileNet-style model, more than the
    fine-tune's own compute there.
    """
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def whole_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> Any:
    """``(x, y)`` reshuffled every epoch (seeded) in whole batches: the last partial batch
    is dropped.

    A fine-tune over 1,438 images in batches of 32 would end every epoch on a
    batch of 30, and that second input shape makes Keras trace its train step
    a second time (about 4 s on the MobileNet-style model, in every arm). The
    TFMOT arm's subprocess batches the same way, so the budgets stay equal.
    """
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size, drop_remainder=True)
    )


@dataclasses.dataclass
class ClassifierWorkload(Workload):
    """A digits classifier: trained from scratch per seed, fine-tuned with Adam."""

    builder: Any = None
    flatten: bool = False
    upsample: int = 0
    train_epochs: int = 15
    finetune_epochs: int = 3
    learning_rate: float = 1e-3
    finetune_learning_rate: float = 5e-4
    batch_size: int = 32

    def __post_init__(self):
        self._data: Split | None = None
        self._trained: dict[int, list[np.ndarray]] = {}

    def data(self) -> Split:
        if self._data is None:
            split = load_digits(flatten=self.flatten)
            if self.upsample:
                size = self.upsample
                up = lambda x: np.asarray(  # noqa: E731
                    keras.ops.image.resize(x, (size, size), interpolation="bilinear")
                )
                split = Split(up(split.x_train), split.y_train, up(split.x_test), split.y_test)
            self._data = split
        return self._data

    def build(self) -> keras.Model:
        return self.builder()

    def share_starting_models(self, folder: str | Path) -> None:
        """Keeps the trained starting weights in ``folder`` and reads them from there.

        A parallel run trains each starting model once (in its workload's
        first unit) and every worker process that runs that workload's
        methods loads the same weights instead of training them again.
        """
        self._shared = Path(folder)
        self._shared.mkdir(parents=True, exist_ok=True)

    def _shared_file(self, seed: int) -> Path | None:
        shared = getattr(self, "_shared", None)
        return None if shared is None else shared / f"{self.name}_seed{seed}.npz"

    def train(self, seed: int) -> keras.Model:
        model = self.build()
        shared = self._shared_file(seed)
        if seed not in self._trained and shared is not None and shared.exists():
            with np.load(shared) as stored:
                self._trained[seed] = [stored[f"w{i}"] for i in range(len(stored.files))]
        if seed not in self._trained:
            keras.utils.set_random_seed(seed)
            model = self.build()
            model.compile(keras.optimizers.Adam(self.learning_rate), _loss())
            data = self.data()
            model.fit(
                data.x_train,
                data.y_train,
                epochs=self.train_epochs,
                batch_size=self.batch_size,
                verbose=0,
            )
            self._trained[seed] = model.get_weights()
            if shared is not None:  # atomic: another worker never reads half a file
                with atomic_write(shared, "wb") as file:
                    np.savez(file, **{f"w{i}": w for i, w in enumerate(self._trained[seed])})
        model.set_weights(self._trained[seed])
        return model

    def evaluate(self, model: Any) -> dict:
        data = self.data()
        if isinstance(model, keras.Model):  # a direct call: no predict() retracing per model
            logits = np.concatenate(
                [
                    np.asarray(model(data.x_test[i : i + 256], training=False))
                    for i in range(0, len(data.x_test), 256)
                ]
            )
        else:
            logits = np.asarray(model(data.x_test))
        if not np.all(np.isfinite(logits)):
            return {"accuracy": float("nan")}
        return {"accuracy": float(np.mean(np.argmax(logits, axis=-1) == data.y_test))}

    def compile_for_finetune(self, model: keras.Model) -> None:
        model.compile(keras.optimizers.Adam(self.finetune_learning_rate), _loss())

    def finetune(self, model: keras.Model, callbacks: Sequence[Any] = (), seed: int = 0) -> None:
        keras.utils.set_random_seed(1000 + seed)
        data = self.data()
        build_optimizer(model)
        model.fit(
            whole_batches(data.x_train, data.y_train, self.batch_size, seed=1000 + seed),
            epochs=self.finetune_epochs,
            shuffle=False,  # the dataset reshuffles every epoch
            verbose=0,
            callbacks=list(callbacks),
        )


@dataclasses.dataclass
class LanguageModelWorkload(Workload):
    """The shipped byte-level transformer on the bundled CPython corpus.

    Every seed starts from the same shipped weights (the seed changes
    calibration samples and fine-tune batches); quality is held-out bits per
    byte and next-byte accuracy, with ``gzip -9`` on the same bytes as anchor.
    """

    finetune_steps: int = 100
    finetune_batch: int = 16
    finetune_learning_rate: float = 2e-4
    eval_limit: int | None = None

    def __post_init__(self):
        self._corpus = None
        self._weights: list[np.ndarray] | None = None
        self._eval: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def context(self) -> int:
        return shipped_lm_record()["config"]["context"]

    def data(self) -> Any:
        if self._corpus is None:
            self._corpus = load_text_corpus()
        if self._eval is None:
            self._eval = eval_windows(self._corpus.test, self.context, limit=self.eval_limit)
        x_test, y_test = self._eval
        return _TextData(self._corpus.train, self._corpus.test, x_test, y_test, self.context)

    def build(self) -> keras.Model:
        return load_byte_lm()

    def train(self, seed: int) -> keras.Model:
        model = load_byte_lm()
        if self._weights is None:
            self._weights = model.get_weights()
        return model

    def evaluate(self, model: Any) -> dict:
        data = self.data()
        bpb, acc = bits_per_byte(model, data.x_test, data.y_test)
        return {"bits_per_byte": bpb, "next_byte_accuracy": acc}

    def context_free_quality(self) -> float:
        """Bits per byte of the training split's byte frequencies on the held-out targets.

        The best a model that ignores the context can do (add-one smoothed): a
        pruned model above it has lost everything the context gave.
        """
        data = self.data()
        counts = np.bincount(np.asarray(data.train).ravel(), minlength=256) + 1.0
        probabilities = counts / counts.sum()
        return float(-np.mean(np.log2(probabilities[np.asarray(data.y_test).ravel()])))

    def anchor(self) -> dict:
        """``gzip -9`` bits per byte on the held-out split (the whole of it)."""
        return {"gzip9_bits_per_byte": gzip_bits_per_byte(self.data().test)}

    def calibration_pairs(self, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Calibration windows with their next-byte targets (for gradient-based methods)."""
        return sample_windows(self.data().train, count, self.context, seed=10_000 + seed)

    def sample_input(self) -> np.ndarray:
        return self.data().x_test[:1]

    def compile_for_finetune(self, model: keras.Model) -> None:
        model.compile(
            keras.optimizers.AdamW(
                self.finetune_learning_rate, weight_decay=0.0, global_clipnorm=1.0
            ),
            _loss(),
        )

    def finetune(self, model: keras.Model, callbacks: Sequence[Any] = (), seed: int = 0) -> None:
        keras.utils.set_random_seed(1000 + seed)
        x, y = sample_windows(
            self.data().train,
            self.finetune_steps * self.finetune_batch,
            self.context,
            seed=20_000 + seed,
        )
        build_optimizer(model)
        model.fit(
            x,
            y,
            batch_size=self.finetune_batch,
            epochs=1,
            verbose=0,
            callbacks=list(callbacks),
            shuffle=False,
        )


@dataclasses.dataclass(frozen=True)
class _TextData:
    train: np.ndarray
    test: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    context: int

    @property
    def x_train(self) -> np.ndarray:  # windows for generic code that samples x_train
        return eval_windows(self.train, self.context)[0]


@dataclasses.dataclass
class LatencyWorkload(Workload):
    """A keras.applications model with random weights: size and latency, no accuracy."""

    application: str = "MobileNetV2"
    alpha: float = 1.0
    resolution: int = 224

    def build(self) -> keras.Model:
        factory = getattr(keras.applications, self.application)
        return factory(
            input_shape=(self.resolution, self.resolution, 3),
            alpha=self.alpha,
            weights=None,
            classes=1000,
        )

    def train(self, seed: int) -> keras.Model:
        keras.utils.set_random_seed(seed)
        return self.build()

    def data(self) -> Any:
        rng = np.random.default_rng(0)
        x = rng.random((8, self.resolution, self.resolution, 3), dtype=np.float32)
        return Split(x, np.zeros(8, np.int64), x[:4], np.zeros(4, np.int64))

    def evaluate(self, model: Any) -> dict:
        return {}

    def compile_for_finetune(self, model: keras.Model) -> None:
        model.compile(keras.optimizers.Adam(1e-4), _loss())

    def finetune(self, model: keras.Model, callbacks: Sequence[Any] = (), seed: int = 0) -> None:
        return None  # no data to fine-tune on: latency and size only


def mobilenet_style(input_shape=(32, 32, 1), num_classes: int = 10, width: int = 16) -> keras.Model:
    """MobileNetV2-style inverted residual blocks (expand 1x1, depthwise 3x3, project 1x1).

    A stem convolution, four blocks (expansion 4; strides 1, 2, 1, 2; residual
    where shapes allow), a 1x1 head, global average pooling and a Dense
    classifier: the block structure of Sandler et al. (2018) at digits scale.
    BatchNormalization uses momentum 0.9: with Keras' 0.99 the moving statistics
    lag a few hundred steps behind the weights, and after 12 epochs the model
    scored 53% in inference mode while fitting its training split at 100%.
    """
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(width, 3, strides=2, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = keras.layers.ReLU(6.0, name="stem_relu")(x)
    channels = width
    for i, (out, stride) in enumerate([(width, 1), (2 * width, 2), (2 * width, 1), (4 * width, 2)]):
        h = keras.layers.Conv2D(4 * channels, 1, name=f"b{i}_expand")(x)
        h = keras.layers.BatchNormalization(momentum=0.9, name=f"b{i}_expand_bn")(h)
        h = keras.layers.ReLU(6.0, name=f"b{i}_expand_relu")(h)
        h = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", name=f"b{i}_dw")(h)
        h = keras.layers.BatchNormalization(momentum=0.9, name=f"b{i}_dw_bn")(h)
        h = keras.layers.ReLU(6.0, name=f"b{i}_dw_relu")(h)
        h = keras.layers.Conv2D(out, 1, name=f"b{i}_project")(h)
        h = keras.layers.BatchNormalization(momentum=0.9, name=f"b{i}_project_bn")(h)
        x = keras.layers.Add(name=f"b{i}_add")([x, h]) if stride == 1 and out == channels else h
        channels = out
    x = keras.layers.Conv2D(8 * width, 1, name="head")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name="head_bn")(x)
    x = keras.layers.ReLU(6.0, name="head_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="mobilenet_style")


def list_workloads(quick: bool = False, tiny: bool = False) -> list[Workload]:
    """The suite's workloads, in report order.

    Fine-tune budgets are the same in the full and the quick configuration
    (so a quick run's arms are a subset of a full run's); ``quick`` trains the
    classifiers' starting models for fewer epochs and scores the language
    model on fewer held-out windows (128 instead of 256). ``tiny`` is the
    test command's smoke configuration.
    """
    short = quick or tiny
    cnn_epochs = 2 if tiny else (10 if quick else 15)
    return [
        ClassifierWorkload(
            "digits_cnn",
            "classification",
            "digits CNN (conv 32/64/128, dense 128; 160k params) on 8x8 digits, fixed 80/20 split",
            "accuracy",
            True,
            short,
            builder=models.digits_cnn,
            train_epochs=cnn_epochs,
            finetune_epochs=1 if tiny else 2,
        ),
        ClassifierWorkload(
            "lenet_300_100",
            "classification",
            "LeNet-300-100 (64-300-100-10 MLP; 51k params) on flattened digits",
            "accuracy",
            True,
            short,
            builder=models.digits_mlp,
            flatten=True,
            relative_cost=0.7,
            train_epochs=2 if tiny else (15 if quick else 20),
            finetune_epochs=1 if tiny else 2,
        ),
        LanguageModelWorkload(
            "byte_lm",
            "language_model",
            "byte-level GPT decoder (d=128, 3 blocks, 4 heads, context 128; 677k params) on "
            "held-out CPython stdlib source",
            "bits_per_byte",
            False,
            short,
            quick_levels=1,
            relative_cost=4.0,
            finetune_steps=5 if tiny else 30,
            eval_limit=16 if tiny else (128 if quick else 256),
        ),
        ClassifierWorkload(
            "mobilenet_digits",
            "classification",
            "MobileNetV2-style inverted residual blocks on digits upsampled to 32x32",
            "accuracy",
            True,
            short,
            quick_levels=1,
            relative_cost=3.0,
            builder=mobilenet_style,
            upsample=32,
            train_epochs=2 if tiny else (8 if quick else 12),
            finetune_epochs=1 if tiny else 2,
        ),
        LatencyWorkload(
            "mobilenetv2_035",
            "latency",
            "keras.applications MobileNetV2 alpha 0.35, 224x224, random weights (size, latency)",
            "none",
            True,
            short,
            relative_cost=0.3,
            alpha=0.35,
        ),
        LatencyWorkload(
            "mobilenetv2_100",
            "latency",
            "keras.applications MobileNetV2 alpha 1.0, 224x224, random weights (size, latency)",
            "none",
            True,
            short,
            relative_cost=0.3,
            alpha=1.0,
        ),
    ]


def get_workload(name: str, quick: bool = False, tiny: bool = False) -> Workload:
    """The workload called ``name``.

    Raises:
        ValueError: No workload has that name (the known names are listed).
    """
    known = {w.name: w for w in list_workloads(quick=quick, tiny=tiny)}
    if name not in known:
        raise ValueError(f"unknown workload {name!r}; known: {sorted(known)}")
    return known[name]
