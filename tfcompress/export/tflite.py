"""``export``: Keras model -> verified .tflite file and a report."""

from __future__ import annotations

import dataclasses
import gzip
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfcompress.core.backend import require_tensorflow_backend
from tfcompress.core.calibration import CalibrationData, calibration_data
from tfcompress.core.io import write_bytes
from tfcompress.export.binary_packed import BINARY, convert_binary, plan_binary_export
from tfcompress.export.converter import (
    QUANTIZATION_MODES,
    as_model,
    convert,
    input_structure,
    validate_quantization,
)
from tfcompress.export.interpreter import TFLiteModel
from tfcompress.export.low_bit import pack_low_bit_weights
from tfcompress.export.sparsity import (
    AUTO_THRESHOLD,
    file_sparsity,
    model_sparsity,
    runs_with_default_delegate,
    validate_sparsity_mode,
)
from tfcompress.reporting.table import format_value

__all__ = ["ExportReport", "export"]

_RANDOM_VERIFY_SAMPLES = 64
EXPORT_MODES: tuple[str | None, ...] = (*QUANTIZATION_MODES, BINARY)


@dataclasses.dataclass
class ExportReport:
    """What :func:`export` wrote and how closely the file matches Keras.

    Attributes:
        path: Where the .tflite file is.
        quantization: The mode used (None for float32).
        bytes: File size.
        gzip_bytes: Size after gzip -9 (what a download or app bundle costs).
        verified: Whether the file was run in the LiteRT interpreter and its
            outputs (and Keras's) were all finite.
        verify_error: Why verification failed (non-finite outputs), else None.
        verify_source: What it was compared on: "verify_data",
            "representative_data" or "random" inputs.
        verify_samples: How many examples were compared.
        max_abs_diff: Largest absolute output difference, file vs Keras.
        mean_abs_diff: Mean absolute output difference.
        top1_agreement: Fraction of examples whose arg-max matches Keras
            (None for outputs with one unit).
        keras_accuracy: Keras top-1 accuracy, when labels were given.
        tflite_accuracy: The file's top-1 accuracy, when labels were given.
        latency_ms: Median single-example invoke time, when measured.
        op_counts: ``{"CONV_2D[int8]": 3, ...}`` as found in the file.
        weight_sparsity: Fraction of zeros in the file's weight tensors.
        sparse_encoding: Whether weights use TFLite's sparse encoding.
        int4_weights: How many weight tensors on a 3-4 bit grid were
            rewritten to INT4 (see :mod:`tfcompress.export.low_bit`).
        int2_weights: How many ``FULLY_CONNECTED`` weight tensors on a 2-bit
            grid were rewritten to INT2.
        binary_layers: Binary layers stored bit-packed (``quantization="binary"``,
            see :mod:`tfcompress.export.binary_packed`).
        bits_per_binary_weight: Stored bits (words + scales) per weight of those layers.
        fallback: Why ``quantization="binary"`` wrote another mode, else None.
    """

    path: str
    quantization: str | None
    bytes: int
    gzip_bytes: int
    verified: bool = False
    verify_error: str | None = None
    verify_source: str | None = None
    verify_samples: int = 0
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    top1_agreement: float | None = None
    keras_accuracy: float | None = None
    tflite_accuracy: float | None = None
    latency_ms: float | None = None
    op_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    weight_sparsity: float | None = None
    sparse_encoding: bool = False
    int4_weights: int = 0
    int2_weights: int = 0
    binary_layers: int = 0
    bits_per_binary_weight: float | None = None
    fallback: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        lines = [f"TFLite export: {self.path}"]
        for field in dataclasses.fields(self):
            if field.name in ("path", "op_counts"):
                continue
            value = getattr(self, field.name)
            if value is not None:
                lines.append(f"  {field.name:16s} {format_value(value)}")
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(self.op_counts.items()))
        lines.append(f"  {'ops':16s} {ops}")
        return "\n".join(lines)


def _check_path(path: str | os.PathLike) -> Path:
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"path={str(path)!r} is a directory; give a file name")
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f"path={str(path)!r}: the directory {str(target.parent)!r} does not exist; "
            "create it first or choose another path"
        )
    return target


def _random_inputs(structure: Any, n: int, seed: int = 0) -> Any:
    """Uniform [0, 1) floats; integer inputs (token ids, masks) get 0 or 1."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in keras.tree.flatten(structure):
        shape = (n, *spec.shape[1:])
        if None in shape[1:]:
            raise ValueError(
                f"cannot make random verification data for input shape {tuple(spec.shape)}: "
                "pass verify_data"
            )
        dtype = np.dtype(spec.dtype.as_numpy_dtype)
        if dtype.kind in "biu":
            arrays.append(rng.integers(0, 2, shape).astype(dtype))
        else:
            arrays.append(rng.uniform(0, 1, shape).astype(dtype))
    return arrays


def _check_count(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _non_finite(arrays: list[np.ndarray], side: str) -> str | None:
    for i, array in enumerate(arrays):
        array = np.asarray(array)
        if array.dtype.kind == "f":
            bad = array.size - int(np.count_nonzero(np.isfinite(array)))
            if bad:
                return f"{side} output {i} has {bad} NaN/Inf value(s) of {array.size}"
    return None


def export(
    model: keras.Model | str | os.PathLike,
    path: str | os.PathLike,
    quantization: str | None = None,
    representative_data: Any = None,
    verify: bool = True,
    *,
    verify_data: Any = None,
    verify_labels: np.ndarray | None = None,
    max_verify_samples: int = 2000,
    latency_runs: int = 0,
    num_threads: int | None = None,
    input_signature: Sequence[Any] | None = None,
    calibration_samples: int = 500,
    verbose: int = 1,
    sparsity: str | bool = "auto",
    custom_ops: bool = False,
) -> ExportReport:
    """Converts a Keras 3 model to a .tflite file, runs it in LiteRT and reports.

    Args:
        model: A built Keras model, or the path of a ``.keras`` file. Dict, list
            and nested inputs/outputs are kept: the file's signature names them
            (``token_ids``, ...) and :class:`TFLiteModel` takes and returns
            the same structure.
        path: Where to write the .tflite file (its directory must exist).
        quantization: ``None`` (float32), ``"dynamic"``, ``"float16"``,
            ``"int8"`` (full integer; needs ``representative_data`` unless
            the model is quantization-aware) or ``"binary"`` (binary layers'
            kernels bit-packed, builtin ops only; see
            :mod:`tfcompress.export.binary_packed`).
        representative_data: Inputs that calibrate int8 (array, one array per
            input, a dict for dict inputs, ``tf.data.Dataset`` or iterable of
            batches), checked against the model's input shapes before converting.
        verify: Run the file in the LiteRT interpreter and compare with Keras.
        verify_data: Inputs to compare on; defaults to ``representative_data``,
            else random uniform [0, 1) inputs.
        verify_labels: Integer labels of ``verify_data``; adds Keras and TFLite
            accuracy to the report.
        max_verify_samples: Compare on at most this many examples.
        latency_runs: If > 0, also measure the median single-example latency
            over this many invokes.
        num_threads: Interpreter threads for verification and latency.
        input_signature: ``tf.TensorSpec``s for models without defined inputs.
        calibration_samples: At most this many examples calibrate int8.
        verbose: 1 shows progress bars, 0 is silent.
        sparsity: ``"auto"`` (default) stores the weights of a pruned model
            (>= 50% zeros) in TFLite's sparse encoding when that gives a
            smaller file that still runs with the default XNNPACK delegate
            (float32/float16/dynamic; never for int8, whose sparse files fail
            to delegate); True forces it (error if the file does not run);
            False never. Not used by ``"binary"``.
        custom_ops: With ``quantization="binary"``, ask for custom XNOR-popcount
            LiteRT ops; they are not available yet, so a warning says so and the
            stock file is written.

    Returns:
        An :class:`ExportReport`.

    Raises:
        ValueError: Unknown ``quantization``; int8 without representative data;
            ``"binary"`` for a model without binary kernels, with ``sparsity=True``,
            or ``custom_ops`` without ``"binary"``;
            data that does not fit the model's inputs; a weight holding NaN or
            Inf; a model with no defined inputs; a negative count.
        TypeError: ``model`` is neither a Keras model nor a path.
        FileNotFoundError: ``path`` is in a directory that does not exist.
        OSError: The file cannot be written (a previous file at ``path`` is
            then unchanged: it is replaced atomically).

    Verification fails (``verified`` False, ``verify_error`` set, a warning)
    when Keras or the file gives NaN/Inf outputs.

    Example:
        >>> report = tfcompress.export.tflite(
        ...     model, "digits_int8.tflite", quantization="int8",
        ...     representative_data=data.x_train, verify_data=data.x_test,
        ...     verify_labels=data.y_test)
        >>> report.bytes, report.top1_agreement
    """
    require_tensorflow_backend("TFLite export")
    # Validate everything before the (slow) conversion starts.
    model = as_model(model)
    quantization = validate_quantization(quantization, EXPORT_MODES)
    target = _check_path(path)
    _check_count("latency_runs", latency_runs, 0)
    _check_count("max_verify_samples", max_verify_samples, 1)
    _check_count("calibration_samples", calibration_samples, 1)
    structure = input_structure(model, input_signature)
    data_structure = model if input_signature is None else structure
    if verify_labels is not None and verify_data is None:
        raise ValueError("verify_labels were given without verify_data")
    sparsity = validate_sparsity_mode(sparsity)
    binary_plan = None
    if quantization == BINARY:
        if sparsity is True:
            raise ValueError(
                "sparsity=True does not apply to quantization='binary' (packed signs have no "
                "zeros); use sparsity='auto' or False"
            )
        binary_plan = plan_binary_export(model, custom_ops)
    elif custom_ops is not False:
        raise ValueError(
            f"custom_ops={custom_ops!r} applies to quantization='binary' only, got "
            f"quantization={quantization!r}"
        )
    calibration = checked = None
    if verify_data is not None:
        checked = calibration_data(
            verify_data, data_structure, max_samples=max_verify_samples, argument="verify_data"
        )
    if representative_data is not None:
        reads = calibration_samples
        if checked is None:
            reads = max(calibration_samples, max_verify_samples)
        calibration = calibration_data(
            representative_data, data_structure, max_samples=reads, argument="representative_data"
        )
        if checked is None:
            checked = calibration
    if calibration is not None and quantization != "int8":
        calibration = None  # only int8 calibrates; the data may still verify

    def _convert(sparse: bool) -> bytes:
        return convert(
            model,
            quantization,
            calibration,
            signature=input_signature,
            calibration_samples=calibration_samples,
            verbose=verbose,
            sparsity=sparse,
        )

    if binary_plan is not None:
        binary = convert_binary(model, binary_plan, signature=input_signature, verbose=verbose)
        flatbuffer = binary.flatbuffer
        quantization = binary.quantization  # "dynamic" when it fell back
    else:
        flatbuffer = _convert(sparsity is True)
    if sparsity is True and not runs_with_default_delegate(flatbuffer, num_threads):
        raise RuntimeError(
            f"the sparse-encoded {quantization or 'float32'} file does not run with the default "
            "XNNPACK delegate (int8 sparse files fail to delegate on this LiteRT); export with "
            "sparsity='auto' or False"
        )
    if (
        binary_plan is None
        and sparsity == "auto"
        and quantization != "int8"
        and model_sparsity(model) >= AUTO_THRESHOLD
    ):
        sparse = _convert(True)
        if len(sparse) < len(flatbuffer) and runs_with_default_delegate(sparse, num_threads):
            flatbuffer = sparse
    packing = None
    if quantization == "int8":  # weights on a 2-4 bit grid: INT4/INT2 tensors, same values
        packing = pack_low_bit_weights(flatbuffer)
        flatbuffer = packing.flatbuffer
    write_bytes(target, flatbuffer)  # atomic: a failed write keeps a previous file
    report = ExportReport(
        path=str(target),
        quantization=quantization,
        bytes=len(flatbuffer),
        gzip_bytes=len(gzip.compress(flatbuffer, compresslevel=9)),
        int4_weights=len(packing.int4) if packing else 0,
        int2_weights=len(packing.int2) if packing else 0,
    )
    if binary_plan is not None:
        report.binary_layers = len(binary.layers)
        report.bits_per_binary_weight = binary.bits_per_weight
        report.fallback = binary.fallback
    found = file_sparsity(flatbuffer)
    report.weight_sparsity = found.weight_sparsity
    report.sparse_encoding = found.sparse_tensors > 0
    lite = TFLiteModel(flatbuffer, num_threads=num_threads)
    report.op_counts = lite.op_counts()
    if not verify and latency_runs <= 0:
        return report

    if verify_data is not None:
        source = "verify_data"
    elif representative_data is not None:
        source = "representative_data"
    else:
        source = "random"
        checked = CalibrationData(structure, _random_inputs(structure, _RANDOM_VERIFY_SAMPLES))
    n = min(checked.num_samples, max_verify_samples)
    model_inputs = checked.inputs(n)

    if verify:
        expected = keras.tree.flatten(model.predict(model_inputs, batch_size=256, verbose=0))
        got = keras.tree.flatten(lite.predict(model_inputs))
        report.verify_source = source
        report.verify_samples = n
        report.verify_error = _non_finite(expected, "Keras") or _non_finite(got, "TFLite")
        report.verified = report.verify_error is None
        if not report.verified:
            warnings.warn(
                f"export verification failed: {report.verify_error}", RuntimeWarning, stacklevel=2
            )
        else:
            diffs = [
                np.abs(np.asarray(e, np.float64) - np.asarray(g, np.float64))
                for e, g in zip(expected, got)
            ]
            report.max_abs_diff = float(max(d.max() for d in diffs))
            report.mean_abs_diff = float(np.mean([d.mean() for d in diffs]))
            first_expected, first_got = np.asarray(expected[0]), np.asarray(got[0])
            if first_expected.ndim >= 2 and first_expected.shape[-1] > 1:
                keras_top1 = first_expected.argmax(-1)
                lite_top1 = first_got.argmax(-1)
                report.top1_agreement = float(np.mean(keras_top1 == lite_top1))
                if verify_labels is not None:
                    labels = np.asarray(verify_labels)[: len(keras_top1)]
                    report.keras_accuracy = float(np.mean(keras_top1 == labels))
                    report.tflite_accuracy = float(np.mean(lite_top1 == labels))
    if latency_runs > 0:
        report.latency_ms = lite.latency_ms(checked.flat(1), runs=latency_runs)
    return report
