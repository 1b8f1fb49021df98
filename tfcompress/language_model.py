"""The byte-level transformer language model of the benchmark suite, and its metrics.

A GPT-style decoder over raw bytes (vocabulary 256): a byte embedding plus a
learned position embedding, ``num_layers`` pre-norm blocks of causal
``keras.layers.MultiHeadAttention`` and a GELU feed-forward network, a final
LayerNormalization and a Dense layer to 256 logits. Every weight sits in a stock
Keras layer (Embedding, MultiHeadAttention's EinsumDense projections, Dense,
LayerNormalization) except the position table, so every tfcompress technique
meets the layers it would meet in a user's model.

The weights trained by ``benchmarks/train_language_model.py`` on the bundled
corpus (:func:`tfcompress.datasets.load_text_corpus`) ship with the package
(``tfcompress/data/byte_lm.weights.npz``, float16); :func:`load_byte_lm`
returns that trained model, so every compression run starts from the same
weights and nobody retrains it.

The metric is bits per byte on held-out text: the mean next-byte cross-entropy
in bits, ``-log2 p(x_t | x_<t)``, over non-overlapping windows of ``context``
bytes (each window is scored on all its positions, so the first bytes of a
window have little context; every arm is scored the same way).
"""

from __future__ import annotations

import gzip
import importlib.resources
import json
import math

import keras
import numpy as np
from keras import ops

__all__ = [
    "PositionEmbedding",
    "bits_per_byte",
    "byte_lm",
    "eval_windows",
    "gzip_bits_per_byte",
    "load_byte_lm",
    "sample_windows",
    "shipped_lm_record",
]

VOCAB = 256
_WEIGHTS = "byte_lm.weights.npz"
_RECORD = "byte_lm.json"


@keras.saving.register_keras_serializable(package="tfcompress")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position to a sequence of vectors.

    ``y[b, t, :] = x[b, t, :] + P[t, :]`` with ``P`` of shape
    ``(sequence_length, d)``, as in GPT (Radford et al. 2018).

    Args:
        sequence_length: The longest sequence the table covers.
        initializer: Initializer of the table.
        **kwargs: Standard Layer arguments.

    Example:
        >>> layer = PositionEmbedding(128)
        >>> layer(keras.ops.zeros((2, 128, 64))).shape
        (2, 128, 64)
    """

    def __init__(self, sequence_length: int, initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(sequence_length, int) or sequence_length < 1:
            raise ValueError(
                f"sequence_length must be a positive int; received {sequence_length!r}"
            )
        self.sequence_length = sequence_length
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.sequence_length, int(input_shape[-1])),
            initializer=self.initializer,
        )

    def call(self, inputs):
        length = ops.shape(inputs)[-2]
        return inputs + ops.cast(self.embeddings[:length], inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "sequence_length": self.sequence_length,
            "initializer": keras.initializers.serialize(self.initializer),
        }


def byte_lm(
    context: int = 128,
    d_model: int = 128,
    num_layers: int = 3,
    num_heads: int = 4,
    ffn_units: int = 512,
) -> keras.Model:
    """Builds the (untrained) byte-level decoder; see the module docstring.

    Input: int32 bytes of shape ``(batch, context)``; output: next-byte logits
    of shape ``(batch, context, 256)``. Layer names are fixed
    (``block{i}_attn``, ``block{i}_ffn_up``, ``block{i}_ffn_down``, ``head``)
    so results can name them.

    Example:
        >>> model = tfcompress.language_model.byte_lm()
        >>> model.count_params()
        677248
    """
    if d_model % num_heads:
        raise ValueError(
            f"d_model must be divisible by num_heads; received d_model={d_model}, "
            f"num_heads={num_heads}"
        )
    tokens = keras.Input((context,), dtype="int32", name="bytes")
    x = keras.layers.Embedding(VOCAB, d_model, name="embed")(tokens)
    x = PositionEmbedding(context, name="positions")(x)
    for i in range(num_layers):
        h = keras.layers.LayerNormalization(epsilon=1e-5, name=f"block{i}_ln1")(x)
        h = keras.layers.MultiHeadAttention(num_heads, d_model // num_heads, name=f"block{i}_attn")(
            h, h, use_causal_mask=True
        )
        x = keras.layers.Add(name=f"block{i}_add1")([x, h])
        h = keras.layers.LayerNormalization(epsilon=1e-5, name=f"block{i}_ln2")(x)
        h = keras.layers.Dense(ffn_units, activation="gelu", name=f"block{i}_ffn_up")(h)
        h = keras.layers.Dense(d_model, name=f"block{i}_ffn_down")(h)
        x = keras.layers.Add(name=f"block{i}_add2")([x, h])
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_ln")(x)
    logits = keras.layers.Dense(VOCAB, name="head")(x)
    return keras.Model(tokens, logits, name="byte_lm")


def shipped_lm_record() -> dict:
    """The training record of the shipped weights: config, steps, time, held-out bits per byte."""
    resource = importlib.resources.files("tfcompress") / "data" / _RECORD
    return json.loads(resource.read_text(encoding="utf-8"))


def load_byte_lm() -> keras.Model:
    """The trained byte-level language model shipped with tfcompress (float32 in memory).

    Raises:
        FileNotFoundError: The package has no trained weights (run
            ``python3 run.py bench train_language_model``).

    Example:
        >>> model = tfcompress.language_model.load_byte_lm()
        >>> model.output_shape
        (None, 128, 256)
    """
    record = shipped_lm_record()
    model = byte_lm(**record["config"])
    resource = importlib.resources.files("tfcompress") / "data" / _WEIGHTS
    with resource.open("rb") as f, np.load(f) as archive:
        weights = [archive[f"w{i:03d}"].astype(np.float32) for i in range(len(archive.files))]
    model.set_weights(weights)
    return model


def sample_windows(
    data: np.ndarray, count: int, context: int = 128, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random windows of ``context + 1`` bytes, as (inputs, next-byte targets)."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(data) - context - 1, size=count)
    rows = data[starts[:, None] + np.arange(context + 1)[None, :]].astype(np.int32)
    return rows[:, :-1], rows[:, 1:]


def eval_windows(
    data: np.ndarray, context: int = 128, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows that cover ``data`` (the held-out scoring set).

    Args:
        data: uint8 bytes.
        context: Window length.
        limit: Use at most this many windows (evenly spaced), for quick runs.
    """
    count = (len(data) - 1) // context
    starts = np.arange(count) * context
    if limit is not None and limit < count:
        starts = starts[np.linspace(0, count - 1, limit).astype(np.int64)]
    rows = data[starts[:, None] + np.arange(context + 1)[None, :]].astype(np.int32)
    return rows[:, :-1], rows[:, 1:]


def bits_per_byte(model, x: np.ndarray, y: np.ndarray, batch_size: int = 64) -> tuple[float, float]:
    """Mean next-byte cross-entropy in bits, and next-byte accuracy, of ``model`` on windows.

    ``model`` is a Keras model or any callable mapping an int32 batch to logits
    (a TFLite runner, for instance).
    """
    total_bits, correct, count = 0.0, 0, 0
    for start in range(0, len(x), batch_size):
        logits = np.asarray(
            model(x[start : start + batch_size])
            if not isinstance(model, keras.Model)
            else model.predict_on_batch(x[start : start + batch_size]),
            dtype=np.float64,
        )
        target = y[start : start + batch_size]
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_z = np.log(np.exp(shifted).sum(axis=-1))
        picked = np.take_along_axis(shifted, target[..., None], axis=-1)[..., 0]
        total_bits += float((log_z - picked).sum()) / math.log(2.0)
        correct += int((logits.argmax(axis=-1) == target).sum())
        count += target.size
    if not math.isfinite(total_bits):
        return float("nan"), correct / count
    return total_bits / count, correct / count


def gzip_bits_per_byte(data: np.ndarray) -> float:
    """``gzip -9`` on the same bytes, in bits per byte: the anchor beside the model's number."""
    raw = np.asarray(data, dtype=np.uint8).tobytes()
    return 8.0 * len(gzip.compress(raw, compresslevel=9)) / len(raw)
