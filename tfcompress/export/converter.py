"""Keras 3 model -> .tflite bytes with TensorFlow's converter."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import keras
import numpy as np

from tfcompress.core.backend import require_tensorflow_backend
from tfcompress.core.protocols import is_quantization_aware as layer_is_quantization_aware
from tfcompress.core.walk import walk_layers

__all__ = [
    "QUANTIZATION_MODES",
    "convert",
    "is_quantization_aware",
    "signature_specs",
    "validate_quantization",
]

QUANTIZATION_MODES: tuple[str | None, ...] = (None, "dynamic", "float16", "int8")
_CALIBRATION_BATCH = 32


def validate_quantization(quantization: str | None) -> str | None:
    """Returns the canonical mode or raises ValueError naming the allowed ones."""
    if isinstance(quantization, str) and quantization.lower() in ("none", "float32"):
        return None
    if quantization not in QUANTIZATION_MODES:
        raise ValueError(
            f"quantization={quantization!r} is not supported; expected one of "
            f"{', '.join(repr(m) for m in QUANTIZATION_MODES)}"
        )
    return quantization


def iter_layers(model: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Every layer inside ``model``, nested models and sublayers included."""
    yield from (layer for _, layer in walk_layers(model, sublayers=True, models=True))


def is_quantization_aware(model: keras.Model) -> bool:
    """True when a layer of ``model`` carries learned quantization ranges.

    Such layers set ``is_quantization_aware = True``; their fake-quant ops give
    the converter every range, so int8 export needs no representative data.

    Example:
        >>> tfc.tflite_export.is_quantization_aware(tfc.quantize_model(model))
        True
    """
    return any(layer_is_quantization_aware(layer) for layer in iter_layers(model))


@contextlib.contextmanager
def float32_compute(model: keras.Model) -> Iterator[int]:
    """Temporarily computes every mixed-precision layer of ``model`` in float32.

    A model built under ``keras.mixed_precision`` (e.g. ``"mixed_float16"``)
    keeps float32 variables but computes in float16, and float16 ``CONV_2D``/
    ``FULLY_CONNECTED``/... are no TFLite builtins, so such a graph does not
    convert. Tracing the export function with float32 compute instead gives
    the float32 graph of the same weights (``quantization="float16"`` then
    stores float16 weights the usual way). Policies are restored on exit.

    Yields:
        The number of layers switched (0 for a float32 model).
    """
    switched = []
    for layer in [model, *iter_layers(model)]:
        policy = getattr(layer, "dtype_policy", None)
        if (
            policy is not None
            and getattr(policy, "quantization_mode", None) is None
            and policy.variable_dtype == "float32"
            and policy.compute_dtype != "float32"
        ):
            switched.append((layer, policy))
            layer.dtype_policy = "float32"
    try:
        yield len(switched)
    finally:
        for layer, policy in switched:
            layer.dtype_policy = policy


def signature_specs(model: keras.Model, signature: Sequence[Any] | None = None) -> list:
    """The ``tf.TensorSpec`` list the exported function takes (batch dimension free).

    Raises:
        ValueError: If the model has no defined inputs and no signature is given.
    """
    import tensorflow as tf

    if signature is not None:
        specs = list(signature) if isinstance(signature, (list, tuple)) else [signature]
        return [tf.TensorSpec(s.shape, s.dtype, name=f"input_{i}") for i, s in enumerate(specs)]
    try:
        inputs = keras.tree.flatten(model.inputs)
    except (AttributeError, ValueError):
        inputs = []
    if not inputs:
        raise ValueError(
            f"model {model.name!r} has no defined inputs, so its input shape is unknown. "
            "Start it with keras.Input(shape) (Sequential/Functional), or pass "
            "input_signature=[tf.TensorSpec((None, ...), 'float32')]."
        )
    # TFLite lowers a recurrent layer's while loop to builtin ops only when its
    # tensor lists have static shapes, so such files get a fixed batch of 1.
    batch = 1 if recurrent_layers(model) else None
    return [
        tf.TensorSpec((batch, *tuple(t.shape[1:])), t.dtype, name=f"input_{i}")
        for i, t in enumerate(inputs)
    ]


def recurrent_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The recurrent layers (LSTM, GRU, any ``keras.layers.RNN``) inside ``model``."""
    return [layer for layer in iter_layers(model) if isinstance(layer, keras.layers.RNN)]


def _concrete_function(model: keras.Model, specs: list):
    import tensorflow as tf
    from tensorflow.python.framework import convert_to_constants

    single = len(specs) == 1

    @tf.function(input_signature=specs)
    def serve(*args):
        outputs = model(args[0] if single else list(args), training=False)
        return {f"output_{i}": t for i, t in enumerate(keras.tree.flatten(outputs))}

    # Freeze variables into constants: the converter otherwise keeps them as
    # resource variables (VAR_HANDLE/READ_VARIABLE) that nothing initialises in
    # the interpreter. This is the one TF-internal import at run time, kept on
    # purpose: the public SavedModel route (tf.saved_model.save +
    # from_saved_model) was tried and does not fold weight-only subgraphs
    # (e.g. a binary kernel's float64 per-channel mean), so binary and
    # quantized layers then fail conversion with ERROR_NEEDS_FLEX_OPS. Letting the
    # converter freeze (experimental_lower_to_saved_model = False) was tried too: the
    # file then has no signature, which tfcompress.tflite_export's interpreter needs.
    return convert_to_constants.convert_variables_to_constants_v2(serve.get_concrete_function())


def _as_input_batches(data: Any, num_inputs: int) -> Iterator[list[np.ndarray]]:
    """Yields lists of float arrays (one per model input) from arrays, datasets or iterables."""
    if isinstance(data, np.ndarray) or (
        isinstance(data, (list, tuple))
        and data
        and isinstance(data[0], np.ndarray)
        and num_inputs > 1
    ):
        arrays = [data] if isinstance(data, np.ndarray) else list(data)
        for start in range(0, len(arrays[0]), _CALIBRATION_BATCH):
            yield [a[start : start + _CALIBRATION_BATCH] for a in arrays]
        return
    if not isinstance(data, Iterable):
        raise TypeError(
            "representative_data must be a NumPy array (or one array per input), a "
            f"tf.data.Dataset or an iterable of batches, got {type(data).__name__}"
        )
    for batch in data:
        if isinstance(batch, dict):
            batch = list(batch.values())
        parts = list(batch) if isinstance(batch, (list, tuple)) else [batch]
        yield [np.asarray(keras.ops.convert_to_numpy(p)) for p in parts[:num_inputs]]


def _representative_dataset(data: Any, num_inputs: int, max_samples: int, verbose: int):
    def generator():
        progress = keras.utils.Progbar(max_samples, verbose=verbose, unit_name="sample")
        seen = 0
        for batch in _as_input_batches(data, num_inputs):
            take = min(len(batch[0]), max_samples - seen)
            if take <= 0:
                break
            yield [b[:take].astype(np.float32) for b in batch]
            seen += take
            progress.update(seen)
        if seen == 0:
            raise ValueError("representative_data is empty: give at least one example")
        if seen < max_samples:
            progress.update(seen, finalize=True)

    return generator


@contextlib.contextmanager
def _native_log_capture():
    """Keeps the converter's C++ log lines off stderr unless conversion fails."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as log:
        os.dup2(log.fileno(), fd)
        try:
            yield
        except BaseException:
            os.dup2(saved, fd)
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-20000:])
            raise
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def convert(
    model: keras.Model,
    quantization: str | None = None,
    representative_data: Any = None,
    *,
    signature: Sequence[Any] | None = None,
    calibration_samples: int = 500,
    verbose: int = 1,
    sparsity: bool = False,
) -> bytes:
    """Converts a Keras 3 model to .tflite bytes.

    Args:
        model: A built Keras model (Sequential, Functional, or subclassed with
            ``signature``).
        quantization: ``None`` (float32), ``"dynamic"`` (int8 weights, float
            activations), ``"float16"`` (float16 weights) or ``"int8"`` (full
            integer: int8 weights and activations, float32 input/output).
        representative_data: Calibration inputs; required for ``"int8"``
            unless the model is quantization-aware (its layers carry ranges).
        signature: ``tf.TensorSpec``s for models without ``inputs``.
        calibration_samples: At most this many examples calibrate int8.
        verbose: 1 shows a progress bar during calibration, 0 is silent.
        sparsity: True stores mostly-zero weights in TFLite's sparse encoding
            (``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``); see
            :mod:`tfcompress.export.sparsity` for when that helps.

    Returns:
        The flatbuffer bytes.

    Example:
        >>> flatbuffer = tfc.tflite_export.convert(model, quantization="dynamic")
        >>> len(flatbuffer) < 0.3 * len(tfc.tflite_export.convert(model))
        True
    """
    require_tensorflow_backend("TFLite export")
    import tensorflow as tf

    quantization = validate_quantization(quantization)
    specs = signature_specs(model, signature)
    quantization_aware = is_quantization_aware(model)
    if quantization == "int8" and representative_data is None and not quantization_aware:
        raise ValueError(
            "quantization='int8' needs representative_data (a few hundred typical inputs) "
            "to calibrate activation ranges; pass representative_data=x_train[:500], or "
            "train with tfcompress quantization-aware layers, whose learned ranges need none"
        )
    if calibration_samples < 1:
        raise ValueError(f"calibration_samples must be >= 1, got {calibration_samples}")

    # freezing runs Grappler, which logs to stderr too
    with _native_log_capture(), float32_compute(model):
        function = _concrete_function(model, specs)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
    if quantization is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if sparsity:
        converter.optimizations = [*converter.optimizations, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        if representative_data is not None:
            converter.representative_dataset = _representative_dataset(
                representative_data, len(specs), calibration_samples, verbose
            )
        if not quantization_aware:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        with _native_log_capture():
            return converter.convert()
    except Exception as error:
        recurrent = recurrent_layers(model)
        if recurrent and any(spec.shape[0] is None for spec in specs):
            layer = recurrent[0]
            raise ValueError(
                f"layer {layer.name!r} ({type(layer).__name__}) is recurrent: TFLite converts "
                "recurrent layers with builtin ops only for a fixed batch size; pass "
                "input_signature with a batch dimension of 1 (or leave it out: export then "
                f"fixes it). Converter said: {error}"
            ) from error
        if quantization == "int8" and not quantization_aware:
            raise RuntimeError(
                f"full-integer int8 conversion of model {model.name!r} failed: an op has no "
                "int8 kernel in TFLite. Try quantization='dynamic', or quantize the model with "
                f"tfcompress.quantize_model first. Converter said: {error}"
            ) from error
        raise
