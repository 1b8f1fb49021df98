"""Binary layers in stock LiteRT files: 1-bit packed weights, unpacked by builtin ops.

``tfc.tflite_export.export(model, path, quantization="binary")`` writes a
.tflite file that an unmodified LiteRT interpreter runs (builtin ops only) and
that stores each binarized kernel at about one bit per weight:

* every ``BinaryDense`` / ``BinaryConv2D`` / ``BinaryDepthwiseConv2D`` whose
  kernel quantizer is binary (``ste_sign``, ``magnitude_aware_sign``, ...)
  keeps its signs as an ``int32`` constant, 32 weights per word (weight ``j``
  is bit ``j % 32`` of word ``j // 32``), already in the layout the TFLite op
  reads (``CONV_2D``: output channel first; ``FULLY_CONNECTED``: ``(units,
  in)``; ``DEPTHWISE_CONV_2D``: channel last), plus one float32 scale per
  output channel when the quantizer has one;
* the graph expands the words at run time with ``ADD``, ``RIGHT_SHIFT``,
  ``FLOOR_MOD``, ``CAST``, ``SUB``/``MUL`` and ``RESHAPE`` into the float
  kernel ``+-scale`` and feeds it to the ordinary float ``CONV_2D`` /
  ``FULLY_CONNECTED`` / ``DEPTHWISE_CONV_2D``; the unpacked kernel equals the
  one the Keras layer computes with, bit for bit;
* the rest of the model (first convolution, logits, BatchNormalization,
  the sign of the activations) is converted as in the float32 export, so the
  file computes what Keras computes up to float summation order.

The TFLite converter folds subgraphs whose inputs are all constants, which
would turn the words back into a float kernel. The ``ADD`` adds a zero that
the layer's input decides at run time (``any(v < v)`` of its first element,
false for every value, NaN included), so nothing downstream of it is
constant. After conversion the file is searched for each layer's words; the
export counts a layer as packed only when they are there.

The cost is time: the kernel is expanded on every invoke and a convolution
with run-time weights does not go to XNNPACK (it runs on LiteRT's builtin
kernel). A fast binary file needs custom XNOR-popcount ops, which stock
LiteRT does not have; ``custom_ops=True`` (not available yet) says so and
writes the stock file. When the stock file cannot be made (conversion fails,
or the converter folded the weights after all), export falls back to today's
path, ``quantization="dynamic"`` traced in
:func:`tfcompress.binary.layers.unipolar_inputs` (int8 weights, exact
signs), with a warning that says why.

The graph is built in :mod:`tfcompress.export.binary_graph`; this module
checks the model, converts, finds the words in the file and falls back.

Example:
    >>> report = tfc.tflite_export.export(model, "bnn.tflite", quantization="binary",
    ...                                   verify_data=x_test)
    >>> report.binary_layers, round(report.bits_per_binary_weight, 2)
    (3, 1.07)
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import keras

from tfcompress.binary.layers import unipolar_inputs
from tfcompress.core.walk import walk_layers
from tfcompress.export.binary_graph import (
    LAYER_TYPES,
    BinaryPlan,
    PackedLayer,
    pack_layer,
    packed_kernels,
)
from tfcompress.export.converter import convert

__all__ = [
    "BINARY",
    "BinaryPacking",
    "BinaryPlan",
    "PackedLayer",
    "convert_binary",
    "find_packed",
    "plan_binary_export",
]

BINARY = "binary"
FALLBACK = "dynamic"  # today's path for binary layers: int8 weights, signs kept exact
_CUSTOM_OPS_MESSAGE = (
    "custom_ops=True: LiteRT custom XNOR-popcount ops for binary layers are not available in "
    "this version of tfcompress (no op library to register with the interpreter); wrote the "
    "stock-LiteRT file instead (1-bit packed weights expanded by builtin ops, runs on any "
    "LiteRT interpreter)"
)


@dataclasses.dataclass(frozen=True)
class BinaryPacking:
    """What :func:`convert_binary` wrote.

    Attributes:
        flatbuffer: The .tflite bytes.
        quantization: ``"binary"`` (the stock bit-packed file) or ``"dynamic"``
            (the fallback: int8 weights, see the module docstring).
        layers: Names of the layers whose packed words are in the file.
        skipped: ``(name, why)`` of binary layers exported on their normal
            (float) path.
        binarized_weights: Weights of the packed layers.
        packed_bytes: Bytes of their words and scales found in the file.
        fallback: Why the stock file was not written (None when it was).
        notes: Messages given as warnings (custom ops, fallback).
    """

    flatbuffer: bytes
    quantization: str
    layers: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    binarized_weights: int
    packed_bytes: int
    fallback: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def bits_per_weight(self) -> float | None:
        """Stored bits per binarized weight (words + scales), None without packed layers."""
        if not self.binarized_weights or not self.layers:
            return None
        return 8 * self.packed_bytes / self.binarized_weights


def _skip_reason(layer: keras.layers.Layer) -> str | None:
    quantizer = layer.kernel_quantizer
    if quantizer is None or quantizer.pack_kind != "binary":
        return f"kernel_quantizer={quantizer!r} does not give a binary (+-1) kernel"
    return None


def plan_binary_export(model: keras.Model, custom_ops: bool = False) -> BinaryPlan:
    """Checks that ``model`` can be exported with ``quantization="binary"`` and packs its kernels.

    Args:
        model: A built Keras model with binary layers.
        custom_ops: See :func:`convert_binary`.

    Returns:
        A :class:`BinaryPlan`.

    Raises:
        ValueError: ``custom_ops`` is not a bool; the model has no binary layer
            whose kernel is binary (+-1 times a per-channel scale).

    Example:
        >>> plan = plan_binary_export(tfc.models.digits_binary_cnn())
        >>> [layer.name for layer in plan.layers]
        ['conv2', 'conv3', 'dense1']
    """
    if not isinstance(custom_ops, bool):
        raise ValueError(f"custom_ops must be True or False, got {custom_ops!r}")
    found = [
        (name, layer)
        for name, layer in walk_layers(model, sublayers=True, models=True)
        if isinstance(layer, LAYER_TYPES)
    ]
    packed: list[PackedLayer] = []
    owners: list[keras.layers.Layer] = []
    skipped: list[tuple[str, str]] = []
    for name, layer in found:
        reason = _skip_reason(layer)
        if reason is None:
            try:
                packed.append(pack_layer(name, layer))
                owners.append(layer)
                continue
            except ValueError as error:  # scales along another axis: not +-1 x per-channel
                reason = str(error)
        skipped.append((name, reason))
    if not packed:
        if found:
            why = "; ".join(f"{name}: {reason}" for name, reason in skipped)
            detail = f"none of its binary layers has a binary kernel ({why})"
        else:
            detail = "it has no BinaryDense, BinaryConv2D or BinaryDepthwiseConv2D layer"
        raise ValueError(
            f"quantization='binary' packs binary kernels, but model {model.name!r} gives none: "
            f"{detail}. Expected a model with binary layers (tfc.binarize_model, or "
            "tfc.layers.BinaryDense/BinaryConv2D with a sign kernel_quantizer); for other models "
            "use quantization='dynamic' or 'int8'"
        )
    return BinaryPlan(tuple(packed), tuple(skipped), custom_ops, tuple(owners))


def find_packed(flatbuffer: bytes, plan: BinaryPlan) -> dict[str, int]:
    """``{layer name: bytes of its words and scales}`` for the layers whose words are in the file.

    A layer whose words are missing was folded back into a float kernel by the converter.
    """
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAsModel(flatbuffer, 0)
    stored: set[bytes] = set()
    for i in range(root.BuffersLength()):
        buffer = root.Buffers(i)
        if buffer.Offset() > 1:  # data outside the flatbuffer tables (large models)
            stored.add(bytes(flatbuffer[buffer.Offset() : buffer.Offset() + buffer.Size()]))
        elif buffer.DataLength():
            stored.add(buffer.DataAsNumpy().tobytes())
    found = {}
    for layer in plan.layers:
        if layer.words.astype("<i4").tobytes() not in stored:
            continue
        size = layer.words.nbytes
        if layer.scales is not None:
            # the scale vector, in whichever form the converter kept it (2s, or 2s and s)
            for candidate in (2.0 * layer.scales, layer.scales):
                if candidate.astype("<f4").tobytes() in stored:
                    size += layer.scales.nbytes
        found[layer.name] = size
    return found


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


def convert_binary(
    model: keras.Model,
    plan: BinaryPlan | None = None,
    *,
    signature: Sequence[Any] | None = None,
    verbose: int = 0,
    custom_ops: bool = False,
) -> BinaryPacking:
    """Converts a model with binary layers to a stock-LiteRT file with 1-bit packed kernels.

    See the module docstring for the graph. Layers left out of the plan (ternary
    kernels, ...) and all other layers are converted as in the float32 export.

    Args:
        model: A built Keras model with binary layers.
        plan: From :func:`plan_binary_export` (made here when None).
        signature: ``tf.TensorSpec``s for models without defined inputs.
        verbose: Passed to the converter.
        custom_ops: Ask for custom XNOR-popcount ops. They are not available yet:
            a warning says so and the stock file is written.

    Returns:
        A :class:`BinaryPacking`. When the stock file cannot be made, its
        ``quantization`` is ``"dynamic"`` (today's int8 path, exact signs) and
        ``fallback`` says why; a warning says the same.

    Raises:
        ValueError: As :func:`plan_binary_export`, and as
            :func:`tfcompress.export.converter.convert` for bad weights or signatures.

    Example:
        >>> packing = convert_binary(tfc.models.digits_binary_cnn())
        >>> packing.quantization, packing.layers
        ('binary', ('conv2', 'conv3', 'dense1'))
    """
    if plan is None:
        plan = plan_binary_export(model, custom_ops)
    notes: list[str] = []
    if plan.custom_ops or custom_ops:
        notes.append(_CUSTOM_OPS_MESSAGE)
        _warn(_CUSTOM_OPS_MESSAGE)
    why = None
    try:
        with packed_kernels(plan):
            flatbuffer = convert(model, None, signature=signature, verbose=verbose)
        found = find_packed(flatbuffer, plan)
        missing = [layer.name for layer in plan.layers if layer.name not in found]
        if missing:
            why = (
                f"the TFLite converter folded the packed weights of {', '.join(missing)} back "
                "into float kernels"
            )
    except ValueError:
        raise  # bad weights or signature: the same error on any path
    except Exception as error:  # the converter or a LiteRT op refused the graph
        why = f"converting the bit-packed graph failed ({type(error).__name__}: {error})"
    if why is None:
        return BinaryPacking(
            flatbuffer,
            BINARY,
            tuple(found),
            plan.skipped,
            plan.num_weights,
            sum(found.values()),
            None,
            tuple(notes),
        )
    message = (
        f"quantization='binary': {why}; fell back to quantization={FALLBACK!r} traced with "
        "unipolar_inputs() (int8 weights, 4x rather than ~30x smaller than float32)"
    )
    notes.append(message)
    _warn(message)
    with unipolar_inputs():
        flatbuffer = convert(model, FALLBACK, signature=signature, verbose=verbose)
    return BinaryPacking(
        flatbuffer, FALLBACK, (), plan.skipped, plan.num_weights, 0, why, tuple(notes)
    )
