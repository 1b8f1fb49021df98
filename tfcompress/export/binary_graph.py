"""The export-only graph of ``quantization="binary"``: kernels unpacked from int32 words.

:func:`pack_layer` packs a binary layer's signs into int32 words in the
layout the TFLite op reads; :func:`unpack_kernel` is the TensorFlow graph that
expands them back (``RIGHT_SHIFT``, ``FLOOR_MOD``, ``CAST``, ``SUB``, ``MUL``,
``RESHAPE``: builtin ops) into exactly the kernel the Keras layer computes
with; :func:`packed_kernels` makes the layers of a model trace with it. See
:mod:`tfcompress.export.binary_packed` for the file this gives.

Example:
    >>> plan = tfcompress.export.binary_packed.plan_binary_export(model)
    >>> with packed_kernels(plan):
    ...     flatbuffer = tfc.tflite_export.convert(model)
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

from tfcompress.binary.layers import BinaryConv2D, BinaryDense, BinaryDepthwiseConv2D

__all__ = [
    "LAYER_TYPES",
    "BinaryPlan",
    "PackedLayer",
    "pack_layer",
    "packed_kernels",
    "unpack_kernel",
]

_BITS = 32
LAYER_TYPES = (BinaryDense, BinaryConv2D, BinaryDepthwiseConv2D)


@dataclasses.dataclass(frozen=True)
class PackedLayer:
    """One binary layer's kernel as the stock file stores it.

    Attributes:
        name: The layer's name.
        kind: ``"dense"``, ``"conv"`` or ``"depthwise"``.
        kernel_shape: The Keras kernel's shape.
        words: int32 ``(ceil(n / 32),)``: the signs, bit 1 for ``+1``, in the
            TFLite op's weight layout, weight ``j`` in bit ``j % 32`` of word ``j // 32``.
        scales: float32 per output channel, or None when every scale is 1.
    """

    name: str
    kind: str
    kernel_shape: tuple[int, ...]
    words: np.ndarray
    scales: np.ndarray | None

    @property
    def num_weights(self) -> int:
        return int(np.prod(self.kernel_shape))

    @property
    def nbytes(self) -> int:
        """Bytes of packed words and scales."""
        return int(self.words.nbytes + (0 if self.scales is None else self.scales.nbytes))

    @property
    def stored_shape(self) -> tuple[int, ...]:
        """The unpacked kernel's shape in the TFLite op's layout."""
        shape = self.kernel_shape
        if self.kind == "dense":
            return (shape[1], shape[0])
        if self.kind == "conv":
            return (shape[3], shape[0], shape[1], shape[2])
        return (shape[0], shape[1], 1, shape[2] * shape[3])

    def values(self) -> np.ndarray:
        """The +-1 float32 kernel in the Keras layout (without scales): undoes the packing."""
        bits = np.unpackbits(self.words.astype("<i4").view(np.uint8), bitorder="little")
        stored = bits[: self.num_weights].astype(np.float32) * 2 - 1
        return _to_keras_layout(np, stored.reshape(self.stored_shape), self)


@dataclasses.dataclass(frozen=True)
class BinaryPlan:
    """What :func:`plan_binary_export` found: the layers to pack and those left as they are."""

    layers: tuple[PackedLayer, ...]
    skipped: tuple[tuple[str, str], ...]
    custom_ops: bool = False
    owners: tuple[keras.layers.Layer, ...] = dataclasses.field(
        default=(), repr=False, compare=False
    )

    @property
    def num_weights(self) -> int:
        return sum(layer.num_weights for layer in self.layers)


def _kind(layer: keras.layers.Layer) -> str:
    if isinstance(layer, BinaryDepthwiseConv2D):
        return "depthwise"
    if isinstance(layer, BinaryConv2D):
        return "conv"
    return "dense"


def _to_stored_layout(values: np.ndarray, kind: str) -> np.ndarray:
    if kind == "dense":
        return values.T
    if kind == "conv":
        return np.transpose(values, (3, 0, 1, 2))
    return values  # depthwise: binary_kernel() already gives (kh, kw, 1, channels)


def _to_keras_layout(xp: Any, stored: Any, layer: PackedLayer) -> Any:
    if layer.kind == "dense":
        return xp.transpose(stored, (1, 0))
    if layer.kind == "conv":
        return xp.transpose(stored, (1, 2, 3, 0))
    return xp.reshape(stored, layer.kernel_shape)


def _pack_words(stored: np.ndarray) -> np.ndarray:
    bits = np.packbits(stored.reshape(-1) > 0, bitorder="little")
    bits = np.concatenate([bits, np.zeros((-len(bits)) % 4, np.uint8)])
    return bits.view("<i4").astype(np.int32)


def pack_layer(name: str, layer: keras.layers.Layer) -> PackedLayer:
    """Packs a binary layer's kernel (signs and per-channel scales) into a :class:`PackedLayer`.

    Raises:
        ValueError: The kernel is not +-1 times one scale per output channel.

    Example:
        >>> spec = pack_layer("dense1", model.get_layer("dense1"))
        >>> spec.words.dtype, spec.nbytes
        (dtype('int32'), 8704)
    """
    kind = _kind(layer)
    values, scales = layer.binary_kernel()  # values * scales == the forward-pass kernel
    shape = tuple(int(d) for d in layer._latent_kernel().shape)
    words = _pack_words(_to_stored_layout(values, kind))
    kept = None if np.all(scales == 1.0) else np.asarray(scales, np.float32)
    return PackedLayer(name, kind, shape, words, kept)


def _runtime_shifts(inputs: Any) -> Any:
    """``[[0, 1, ..., 31]]`` (int32) that the converter cannot fold.

    It adds ``any(v < v)`` (false for every value, NaN included) of the input's
    first element, so it depends on the input at run time.
    """
    import tensorflow as tf

    x = tf.convert_to_tensor(inputs)
    corner = x[(slice(0, 1),) * x.shape.rank]  # one element (none for an empty batch)
    zero = tf.cast(tf.reduce_any(tf.less(corner, corner)), tf.int32)
    return tf.constant(np.arange(_BITS, dtype=np.int32)[None, :]) + zero


def unpack_kernel(layer: PackedLayer, shifts: Any) -> Any:
    """The layer's float kernel (Keras layout) from its words, in TFLite builtin ops.

    ``shifts`` is :func:`_runtime_shifts`: the words stay a constant, but the
    ``RIGHT_SHIFT`` reading them has a run-time input, so nothing folds.
    """
    import tensorflow as tf

    words = tf.constant(layer.words[:, None])
    bits = tf.math.floormod(tf.bitwise.right_shift(words, shifts), 2)  # (words, 32) of 0/1
    if layer.num_weights < _BITS * len(layer.words):
        bits = tf.reshape(bits, [-1])[: layer.num_weights]
    values = tf.cast(tf.reshape(bits, layer.stored_shape), tf.float32)
    if layer.scales is None:
        stored = values * 2.0 - 1.0
    else:
        axis = 0 if layer.kind in ("dense", "conv") else len(layer.stored_shape) - 1
        shape = [1] * len(layer.stored_shape)
        shape[axis] = -1
        # (b - 0.5) * 2s is exactly +-s: the kernel the Keras layer computes with
        stored = (values - 0.5) * tf.constant((2.0 * layer.scales).reshape(shape))
    return _to_keras_layout(tf, stored, layer)


@contextlib.contextmanager
def packed_kernels(plan: BinaryPlan) -> Iterator[None]:
    """Inside the context, the plan's layers compute with kernels unpacked from their words.

    For tracing an export graph only: each planned layer's ``call`` reads its
    kernel from :func:`unpack_kernel` instead of the latent variable (frozen layers
    take their normal path, not the XNOR ops); everything else the layer does
    (input quantizer, bias, activation) is its own code. One shift vector per
    traced graph serves every layer. The layers are restored on exit. Not
    thread-safe: do not call the model from another thread meanwhile.

    Example:
        >>> with packed_kernels(plan_binary_export(model)):
        ...     flatbuffer = tfc.tflite_export.convert(model)
    """
    if len(plan.owners) != len(plan.layers):
        raise ValueError("plan has no layers to patch; make it with plan_binary_export(model)")
    shifts: dict[int, Any] = {}  # id(graph) -> the graph's shift vector
    patched: list[tuple[keras.layers.Layer, Any]] = []
    try:
        for layer, spec in zip(plan.owners, plan.layers):
            patched.append((layer, getattr(layer, "_packed", None)))
            _patch(layer, spec, shifts)
        yield
    finally:
        for layer, packed in patched:
            for attr in ("call", "_quantize_kernel"):
                if attr in vars(layer):
                    object.__delattr__(layer, attr)
            if packed is not None:
                layer._packed = packed


def _patch(layer: keras.layers.Layer, spec: PackedLayer, shifts: dict[int, Any]) -> None:
    import tensorflow as tf

    current: dict[str, Any] = {}
    class_call = type(layer).call

    def call(inputs, training=None, **kwargs):
        graph = tf.compat.v1.get_default_graph()
        if id(graph) not in shifts:  # the graph is kept too, so its id stays unique
            shifts[id(graph)] = (graph, _runtime_shifts(inputs))
        current["kernel"] = unpack_kernel(spec, shifts[id(graph)][1])
        try:
            return class_call(layer, inputs, training=training, **kwargs)
        finally:
            current.clear()

    def quantize_kernel(kernel, training=False):
        return current["kernel"]

    if getattr(layer, "_packed", None) is not None:
        layer._packed = None  # frozen: trace the normal path, with the unpacked kernel
    object.__setattr__(layer, "call", call)
    object.__setattr__(layer, "_quantize_kernel", quantize_kernel)
