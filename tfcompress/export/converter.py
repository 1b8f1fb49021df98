"""Keras 3 model -> .tflite bytes with TensorFlow's converter."""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import keras
import numpy as np

from tfcompress.core.backend import require_tensorflow_backend
from tfcompress.core.calibration import CalibrationData, calibration_data, model_input_structure
from tfcompress.core.native_logs import native_log_capture
from tfcompress.core.protocols import is_quantization_aware as layer_is_quantization_aware
from tfcompress.core.walk import walk_layers
from tfcompress.export.attention_masks import int8_friendly_attention_masks
from tfcompress.export.interpreter import structure_from_names

__all__ = [
    "QUANTIZATION_MODES",
    "as_model",
    "check_finite_weights",
    "convert",
    "input_structure",
    "is_quantization_aware",
    "signature_specs",
    "tensor_names",
    "validate_quantization",
]

QUANTIZATION_MODES: tuple[str | None, ...] = (None, "dynamic", "float16", "int8")
_CALIBRATION_BATCH = 32
# a signature name must be a valid TF op name; "." separates path parts
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*(\.[A-Za-z0-9][A-Za-z0-9_\-]*)*")


def validate_quantization(
    quantization: str | None, modes: Sequence[str | None] = QUANTIZATION_MODES
) -> str | None:
    """Returns the canonical mode or raises ValueError naming the allowed ones (``modes``)."""
    if isinstance(quantization, str) and quantization.lower() in ("none", "float32"):
        return None
    if quantization not in modes:
        hint = ""
        if quantization == "binary":
            hint = " (quantization='binary' is written by tfc.tflite_export.export)"
        raise ValueError(
            f"quantization={quantization!r} is not supported{hint}; expected one of "
            f"{', '.join(repr(m) for m in modes)}"
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


def input_structure(model: keras.Model, signature: Any = None) -> Any:
    """The ``tf.TensorSpec`` structure the exported function takes (batch dimension free).

    The structure is the model's own (one spec, a list, or a dict of named inputs,
    nested as the model nests them); each spec is named as the file's signature
    names that input (see :func:`tensor_names`).

    Raises:
        ValueError: If the model has no defined inputs and no signature is given.
    """
    import tensorflow as tf

    if signature is not None:
        structure = signature
        if isinstance(structure, (list, tuple)) and len(structure) == 1:
            structure = structure[0]
        batch = None
    else:
        structure = model_input_structure(model)
        # TFLite lowers a recurrent layer's while loop to builtin ops only when its
        # tensor lists have static shapes, so such files get a fixed batch of 1.
        batch = 1 if recurrent_layers(model) else None
    paths = [path for path, _ in keras.tree.flatten_with_path(structure)]
    names = tensor_names(paths, "input")
    specs = []
    for name, spec in zip(names, keras.tree.flatten(structure)):
        shape = tuple(spec.shape)
        if signature is None:
            shape = (batch, *shape[1:])
        specs.append(tf.TensorSpec(shape, spec.dtype, name=name))
    return keras.tree.pack_sequence_as(structure, specs)


def signature_specs(model: keras.Model, signature: Sequence[Any] | None = None) -> list:
    """The flat ``tf.TensorSpec`` list of :func:`input_structure`, in the file's input order.

    Raises:
        ValueError: If the model has no defined inputs and no signature is given.
    """
    return keras.tree.flatten(input_structure(model, signature))


def tensor_names(paths: Sequence[tuple], prefix: str) -> list[str]:
    """Signature names for the flattened inputs/outputs at ``paths``.

    A single tensor or a flat list is ``{prefix}_0, {prefix}_1, ...``; a dict (or
    any nesting) is named by its path: ``token_ids``, ``backbone.pooled``,
    ``logits.0``. :class:`~tfcompress.export.interpreter.TFLiteModel` reads the
    structure back from these names. Names that would not read back (keys with
    dots, keys that are numbers, non-identifier keys) fall back to the flat names.
    """
    flat = [f"{prefix}_{i}" for i in range(len(paths))]
    if all(len(p) == 0 or (len(p) == 1 and isinstance(p[0], int)) for p in paths):
        return flat
    names = [".".join(str(part) for part in path) for path in paths]
    if not all(_NAME.fullmatch(name) for name in names):
        return flat
    template, ordered = structure_from_names(names, prefix)
    if ordered != names or [tuple(p) for p in _leaf_paths(template)] != [tuple(p) for p in paths]:
        return flat
    return names


def _leaf_paths(template: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(template, dict):
        return [p for k in sorted(template) for p in _leaf_paths(template[k], (*path, k))]
    if isinstance(template, list):
        return [p for i, v in enumerate(template) for p in _leaf_paths(v, (*path, i))]
    return [path]


def check_finite_weights(model: keras.Model) -> None:
    """Raises ValueError naming the first weight that holds NaN or Inf.

    A diverged model converts without complaint and its file agrees with Keras on
    NaN, so export refuses it up front.
    """
    owner: dict[int, keras.layers.Layer] = {}
    for layer in iter_layers(model):  # parents come first, so the innermost layer wins
        for weight in layer.weights:
            owner[id(weight)] = layer
    for weight in model.weights:
        values = np.asarray(keras.ops.convert_to_numpy(weight))
        if values.dtype.kind != "f":
            continue
        bad = values.size - int(np.count_nonzero(np.isfinite(values)))
        if bad:
            layer = owner.get(id(weight), model)
            kinds = []
            if np.isnan(values).any():
                kinds.append("NaN")
            if np.isinf(values).any():
                kinds.append("Inf")
            raise ValueError(
                f"layer {layer.name!r} weight {weight.path!r} has {bad} non-finite value(s) "
                f"({'/'.join(kinds)}) out of {values.size}; export needs finite weights "
                "(retrain or reload a checkpoint from before the model diverged)"
            )


def as_model(model: Any, argument: str = "model") -> keras.Model:
    """Returns ``model``, loading it first when it is a path to a ``.keras`` file.

    Raises:
        TypeError: ``model`` is neither a Keras model nor a path.
        ValueError: The path is not an existing ``.keras`` file.
    """
    if isinstance(model, keras.Model):
        return model
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not path.endswith(".keras"):
            raise ValueError(
                f"{argument}={path!r} is not a .keras file; expected a keras.Model or a path "
                "to a model saved with model.save('name.keras')"
            )
        if not os.path.isfile(path):
            raise ValueError(f"{argument}={path!r}: no such .keras file")
        import tfcompress  # noqa: F401  (registers tfcompress layers for loading)

        return keras.saving.load_model(path, compile=False)
    raise TypeError(
        f"{argument} must be a keras.Model or a path to a .keras file, got {type(model).__name__}"
    )


def recurrent_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The recurrent layers (LSTM, GRU, any ``keras.layers.RNN``) inside ``model``."""
    return [layer for layer in iter_layers(model) if isinstance(layer, keras.layers.RNN)]


def _concrete_function(model: keras.Model, structure: Any):
    import tensorflow as tf
    from tensorflow.python.framework import convert_to_constants

    specs = keras.tree.flatten(structure)
    names: list[str] = []

    @tf.function(input_signature=specs)
    def serve(*args):
        outputs = model(keras.tree.pack_sequence_as(structure, list(args)), training=False)
        paths = [path for path, _ in keras.tree.flatten_with_path(outputs)]
        names[:] = tensor_names(paths, "output")
        return keras.tree.flatten(outputs)

    # Freeze variables into constants: the converter otherwise keeps them as
    # resource variables (VAR_HANDLE/READ_VARIABLE) that nothing initialises in
    # the interpreter. This is the one TF-internal import at run time, kept on
    # purpose: the public SavedModel route (tf.saved_model.save +
    # from_saved_model) was tried and does not fold weight-only subgraphs
    # (e.g. a binary kernel's float64 per-channel mean), so binary and
    # quantized layers then fail conversion with ERROR_NEEDS_FLEX_OPS. Letting the
    # converter freeze (experimental_lower_to_saved_model = False) was tried too: the
    # file then has no signature, which tfcompress.tflite_export's interpreter needs.
    frozen = convert_to_constants.convert_variables_to_constants_v2(serve.get_concrete_function())

    # Freezing returns the outputs as a flat list, and the file's signature
    # would name them output_0, ...; calling the frozen function from a
    # function that returns a dict keeps the names (and so the structure).
    @tf.function(input_signature=specs)
    def named(*args):
        return dict(zip(names, frozen(*args)))

    return named.get_concrete_function()


def _representative_dataset(
    calibration: CalibrationData, names: list[str], batch: int | None, verbose: int
):
    """The converter's generator, with a progress bar over the examples it uses.

    It yields ``{signature input name: batch}``: a plain list would be matched
    to the graph's input tensors in their internal order, which need not be the
    signature's (a multi-input model would then calibrate on swapped inputs).
    """

    def generator():
        progress = keras.utils.Progbar(calibration.num_samples, verbose=verbose, unit_name="sample")
        # Every batch has the same size: the calibrator resizes the graph to the
        # first batch, and a smaller last one fails to prepare in some graphs.
        # Padding repeats examples, which leaves min/max ranges unchanged.
        size = batch or min(_CALIBRATION_BATCH, calibration.num_samples)
        seen = 0
        for part in calibration.batches(size):
            real = len(part[0])
            if real < size:
                part = [np.concatenate([p, np.repeat(p[-1:], size - real, 0)]) for p in part]
            yield dict(zip(names, part))
            seen += real
            progress.update(seen)

    return generator


def convert(
    model: keras.Model | str | os.PathLike,
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
            ``signature``), or the path of a ``.keras`` file. Inputs and outputs
            keep the model's structure (dicts, lists, nesting).
        quantization: ``None`` (float32), ``"dynamic"`` (int8 weights, float
            activations), ``"float16"`` (float16 weights) or ``"int8"`` (full
            integer: int8 weights and activations, float32 input/output).
        representative_data: Calibration inputs; required for ``"int8"``
            unless the model is quantization-aware (its layers carry ranges).
            Any form :func:`tfcompress.core.calibration.calibration_data` takes
            (arrays, dicts, ``tf.data``, iterables), checked against the
            model's input shapes before conversion.
        signature: ``tf.TensorSpec``s for models without ``inputs``.
        calibration_samples: At most this many examples calibrate int8.
        verbose: 1 shows a progress bar during calibration, 0 is silent.
        sparsity: True stores mostly-zero weights in TFLite's sparse encoding
            (``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``); see
            :mod:`tfcompress.export.sparsity` for when that helps.

    Returns:
        The flatbuffer bytes.

    Raises:
        ValueError: Unknown ``quantization``; int8 without representative data;
            representative data that does not fit the model's inputs; a weight
            holding NaN or Inf.
        TypeError: ``model`` is not a Keras model or a path.

    Example:
        >>> flatbuffer = tfc.tflite_export.convert(model, quantization="dynamic")
        >>> len(flatbuffer) < 0.3 * len(tfc.tflite_export.convert(model))
        True
    """
    require_tensorflow_backend("TFLite export")
    import tensorflow as tf

    model = as_model(model)
    quantization = validate_quantization(quantization)
    structure = input_structure(model, signature)
    specs = keras.tree.flatten(structure)
    quantization_aware = is_quantization_aware(model)
    if quantization == "int8" and representative_data is None and not quantization_aware:
        raise ValueError(
            "quantization='int8' needs representative_data (a few hundred typical inputs) "
            "to calibrate activation ranges; pass representative_data=x_train[:500], or "
            "train with tfcompress quantization-aware layers, whose learned ranges need none"
        )
    if isinstance(calibration_samples, bool) or not isinstance(calibration_samples, int):
        raise ValueError(
            f"calibration_samples must be an integer >= 1, got {calibration_samples!r}"
        )
    if calibration_samples < 1:
        raise ValueError(f"calibration_samples must be >= 1, got {calibration_samples}")
    calibration = None
    if quantization == "int8" and representative_data is not None:
        calibration = calibration_data(
            representative_data,
            model if signature is None else structure,
            max_samples=calibration_samples,
            argument="representative_data",
            model_name=model.name,
        )
    check_finite_weights(model)

    # freezing runs Grappler, which logs to stderr too
    masks = int8_friendly_attention_masks() if quantization == "int8" else contextlib.nullcontext()
    with native_log_capture(), float32_compute(model), masks:
        function = _concrete_function(model, structure)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
    if quantization is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if sparsity:
        converter.optimizations = [*converter.optimizations, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        if calibration is not None:
            batch = specs[0].shape[0]
            converter.representative_dataset = _representative_dataset(
                calibration, [s.name for s in specs], None if batch is None else int(batch), verbose
            )
        if not quantization_aware:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        with native_log_capture(), warnings.catch_warnings():
            # the calibrator reads dict batches with tf.lite.Interpreter, which warns
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
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
