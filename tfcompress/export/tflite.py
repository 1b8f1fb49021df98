"""``export``: Keras model -> verified .tflite file and a report."""

from __future__ import annotations

import dataclasses
import gzip
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfcompress.core.backend import require_tensorflow_backend
from tfcompress.core.io import write_bytes
from tfcompress.export.converter import (
    _as_input_batches,
    convert,
    signature_specs,
    validate_quantization,
)
from tfcompress.export.interpreter import TFLiteModel
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


@dataclasses.dataclass
class ExportReport:
    """What :func:`export` wrote and how closely the file matches Keras.

    Attributes:
        path: Where the .tflite file is.
        quantization: The mode used (None for float32).
        bytes: File size.
        gzip_bytes: Size after gzip -9 (what a download or app bundle costs).
        verified: Whether the file was run in the LiteRT interpreter.
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
    """

    path: str
    quantization: str | None
    bytes: int
    gzip_bytes: int
    verified: bool = False
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


def _stack(batches: Sequence[list[np.ndarray]]) -> list[np.ndarray]:
    return [np.concatenate(parts) for parts in zip(*batches)]


def _verification_inputs(data: Any, specs: list, limit: int) -> list[np.ndarray]:
    batches, seen = [], 0
    for batch in _as_input_batches(data, len(specs)):
        batches.append(batch)
        seen += len(batch[0])
        if seen >= limit:
            break
    if not batches:
        raise ValueError("verify_data is empty: give at least one example")
    return [a[:limit] for a in _stack(batches)]


def _random_inputs(specs: list, n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in specs:
        shape = (n, *spec.shape[1:])
        if None in shape[1:]:
            raise ValueError(
                f"cannot make random verification data for input shape {spec.shape}: "
                "pass verify_data"
            )
        arrays.append(rng.uniform(0, 1, shape).astype(spec.dtype.as_numpy_dtype))
    return arrays


def export(
    model: keras.Model,
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
) -> ExportReport:
    """Converts a Keras 3 model to a .tflite file, runs it in LiteRT and reports.

    Args:
        model: A built Keras model.
        path: Where to write the .tflite file (its directory must exist).
        quantization: ``None`` (float32), ``"dynamic"``, ``"float16"`` or
            ``"int8"`` (full integer; needs ``representative_data`` unless
            the model is quantization-aware).
        representative_data: Inputs that calibrate int8 (array, one array per
            input, ``tf.data.Dataset`` or iterable of batches).
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
            False never.

    Returns:
        An :class:`ExportReport`.

    Raises:
        ValueError: Unknown ``quantization``; int8 without representative data;
            a model with no defined inputs.
        FileNotFoundError: ``path`` is in a directory that does not exist.
        OSError: The file cannot be written (a previous file at ``path`` is
            then unchanged: it is replaced atomically).

    Example:
        >>> report = tfcompress.export.tflite(
        ...     model, "digits_int8.tflite", quantization="int8",
        ...     representative_data=data.x_train, verify_data=data.x_test,
        ...     verify_labels=data.y_test)
        >>> report.bytes, report.top1_agreement
    """
    require_tensorflow_backend("TFLite export")
    # Validate everything before the (slow) conversion starts.
    quantization = validate_quantization(quantization)
    target = _check_path(path)
    specs = signature_specs(model, input_signature)
    if verify_labels is not None and verify_data is None:
        raise ValueError("verify_labels were given without verify_data")
    sparsity = validate_sparsity_mode(sparsity)

    def _convert(sparse: bool) -> bytes:
        return convert(
            model,
            quantization,
            representative_data,
            signature=input_signature,
            calibration_samples=calibration_samples,
            verbose=verbose,
            sparsity=sparse,
        )

    flatbuffer = _convert(sparsity is True)
    if sparsity is True and not runs_with_default_delegate(flatbuffer, num_threads):
        raise RuntimeError(
            f"the sparse-encoded {quantization or 'float32'} file does not run with the default "
            "XNNPACK delegate (int8 sparse files fail to delegate on this LiteRT); export with "
            "sparsity='auto' or False"
        )
    if sparsity == "auto" and quantization != "int8" and model_sparsity(model) >= AUTO_THRESHOLD:
        sparse = _convert(True)
        if len(sparse) < len(flatbuffer) and runs_with_default_delegate(sparse, num_threads):
            flatbuffer = sparse
    write_bytes(target, flatbuffer)  # atomic: a failed write keeps a previous file
    report = ExportReport(
        path=str(target),
        quantization=quantization,
        bytes=len(flatbuffer),
        gzip_bytes=len(gzip.compress(flatbuffer, compresslevel=9)),
    )
    found = file_sparsity(flatbuffer)
    report.weight_sparsity = found.weight_sparsity
    report.sparse_encoding = found.sparse_tensors > 0
    lite = TFLiteModel(flatbuffer, num_threads=num_threads)
    report.op_counts = lite.op_counts()
    if not verify and latency_runs <= 0:
        return report

    if verify_data is not None:
        source, inputs = "verify_data", _verification_inputs(verify_data, specs, max_verify_samples)
    elif representative_data is not None:
        source, inputs = (
            "representative_data",
            _verification_inputs(representative_data, specs, max_verify_samples),
        )
    else:
        source, inputs = "random", _random_inputs(specs, _RANDOM_VERIFY_SAMPLES)
    model_inputs = inputs[0] if len(inputs) == 1 else inputs

    if verify:
        expected = keras.tree.flatten(model.predict(model_inputs, batch_size=256, verbose=0))
        got = lite.predict(model_inputs)
        got = got if isinstance(got, list) else [got]
        diffs = [
            np.abs(np.asarray(e, np.float64) - np.asarray(g, np.float64))
            for e, g in zip(expected, got)
        ]
        report.verified = True
        report.verify_source = source
        report.verify_samples = len(inputs[0])
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
        report.latency_ms = lite.latency_ms(inputs, runs=latency_runs)
    return report
