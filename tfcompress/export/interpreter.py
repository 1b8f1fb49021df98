"""Running .tflite files in the LiteRT interpreter (``ai_edge_litert``)."""

from __future__ import annotations

import collections
import dataclasses
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["OpInfo", "TFLiteModel"]


@dataclasses.dataclass(frozen=True)
class OpInfo:
    """One operator of a .tflite file with the dtypes of its tensors."""

    name: str
    input_dtypes: tuple[str, ...]
    output_dtypes: tuple[str, ...]

    @property
    def dtype(self) -> str:
        """``"int8"``; or ``"float32/int8"`` when the weights differ from the activations."""
        if not self.input_dtypes:
            return "-"
        first = self.input_dtypes[0]
        weights = self.input_dtypes[1] if len(self.input_dtypes) >= 2 else first
        if weights != first and self.name in _WEIGHTED_OPS:
            return f"{first}/{weights}"
        return first


_WEIGHTED_OPS = frozenset(
    {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_3D", "TRANSPOSE_CONV", "BATCH_MATMUL"}
)


class TFLiteModel:
    """A .tflite model loaded in the LiteRT interpreter, with a Keras-like ``predict``.

    Inputs and outputs follow the Keras model's order (``input_0``,
    ``output_0``, ... as written by :func:`tfcompress.export.tflite`).
    Integer inputs/outputs are quantized/dequantized with the file's own
    scale and zero point, so ``predict`` always takes and returns floats.

    Args:
        model: Path of a .tflite file, or its bytes.
        num_threads: Interpreter threads (None: LiteRT's default).

    Example:
        >>> lite = TFLiteModel("model.tflite")
        >>> logits = lite.predict(x_test)
    """

    def __init__(self, model: str | os.PathLike | bytes, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        content = model if isinstance(model, bytes) else Path(model).read_bytes()
        self._interpreter = Interpreter(model_content=content, num_threads=num_threads)
        signatures = self._interpreter.get_signature_list()
        if len(signatures) != 1:
            raise ValueError(
                f"expected a .tflite file with exactly one signature, found {sorted(signatures)}"
            )
        ((self._signature_key, signature),) = signatures.items()
        self._runner = self._interpreter.get_signature_runner(self._signature_key)
        self.input_names = _natural_sorted(signature["inputs"])
        self.output_names = _natural_sorted(signature["outputs"])
        self._input_details = self._runner.get_input_details()
        self._output_details = self._runner.get_output_details()

    @property
    def input_details(self) -> dict:
        return self._input_details

    @property
    def output_details(self) -> dict:
        return self._output_details

    @property
    def fixed_batch_size(self) -> int | None:
        """The batch size the file was converted with, or None when it takes any batch.

        Files with recurrent layers are exported with a batch of 1 (see
        :func:`tfcompress.tflite_export.signature_specs`).
        """
        sizes = {
            int(d["shape_signature"][0])
            for d in self._input_details.values()
            if len(d.get("shape_signature", ())) and int(d["shape_signature"][0]) > 0
        }
        return max(sizes) if sizes else None

    def _run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        feed = {}
        for name, value in zip(self.input_names, inputs):
            detail = self._input_details[name]
            feed[name] = _quantize(np.asarray(value), detail)
        raw = self._runner(**feed)
        return [
            _dequantize(np.array(raw[name], copy=True), self._output_details[name])
            for name in self.output_names
        ]

    def predict(
        self, x: np.ndarray | Sequence[np.ndarray], batch_size: int = 64
    ) -> np.ndarray | list[np.ndarray]:
        """Runs the model on ``x`` in batches; one array per output (a list if several)."""
        inputs = [np.asarray(a) for a in x] if isinstance(x, (list, tuple)) else [np.asarray(x)]
        if len(inputs) != len(self.input_names):
            raise ValueError(f"the model takes {len(self.input_names)} input(s), got {len(inputs)}")
        n = len(inputs[0])
        fixed = self.fixed_batch_size
        step = fixed or batch_size
        batches = []
        for i in range(0, n, step):
            chunk = [a[i : i + step] for a in inputs]
            real = len(chunk[0])
            if fixed and real < fixed:  # pad the last chunk of a fixed-batch file
                chunk = [np.concatenate([c, np.repeat(c[-1:], fixed - real, 0)]) for c in chunk]
            batches.append([out[:real] for out in self._run(chunk)])
        if not batches:
            raise ValueError("x is empty: give at least one example")
        outputs = [np.concatenate(parts) for parts in zip(*batches)]
        return outputs[0] if len(outputs) == 1 else outputs

    def latency_ms(
        self, sample: np.ndarray | Sequence[np.ndarray], runs: int = 50, warmup: int = 5
    ) -> float:
        """Median wall time in milliseconds of one invoke on ``sample`` (batch of 1)."""
        inputs = (
            [np.asarray(a)[:1] for a in sample]
            if isinstance(sample, (list, tuple))
            else [np.asarray(sample)[:1]]
        )
        feed = {
            name: _quantize(value, self._input_details[name])
            for name, value in zip(self.input_names, inputs)
        }
        for _ in range(warmup):
            self._runner(**feed)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self._runner(**feed)
            times.append(time.perf_counter() - start)
        return 1000 * statistics.median(times)

    def ops(self) -> list[OpInfo]:
        """The file's operators with their tensor dtypes, in execution order."""
        tensors = {t["index"]: t for t in self._interpreter.get_tensor_details()}

        def dtypes(indices) -> tuple[str, ...]:
            return tuple(
                np.dtype(tensors[i]["dtype"]).name for i in indices if i >= 0 and i in tensors
            )

        return [
            OpInfo(op["op_name"], dtypes(op["inputs"]), dtypes(op["outputs"]))
            for op in self._interpreter._get_ops_details()
        ]

    def op_counts(self) -> dict[str, int]:
        """``{"CONV_2D[int8]": 3, ...}``: how many ops of each kind and dtype."""
        return dict(collections.Counter(f"{op.name}[{op.dtype}]" for op in self.ops()))


def _natural_sorted(names: Sequence[str]) -> list[str]:
    def key(name: str):
        stem, _, index = name.rpartition("_")
        return (stem, int(index)) if index.isdigit() else (name, -1)

    return sorted(names, key=key)


def _quantize(value: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype.kind in "iu" and np.asarray(value).dtype.kind == "f":
        scale, zero_point = detail["quantization"]
        if scale:
            info = np.iinfo(dtype)
            value = np.clip(np.round(value / scale + zero_point), info.min, info.max)
    return np.asarray(value, dtype=dtype)


def _dequantize(value: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).kind in "iu" and scale:
        return (value.astype(np.float32) - zero_point) * scale
    return value
