"""Running .tflite files in the LiteRT interpreter (``ai_edge_litert``)."""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OpInfo", "TFLiteModel", "structure_from_names"]


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

    Inputs and outputs keep the Keras model's structure, read back from the
    signature names :func:`tfcompress.tflite_export.export` writes: one array,
    a list (``input_0``, ``input_1``, ...) or a dict (``token_ids``,
    ``padding_mask``, nested as ``backbone.pooled``). ``predict`` takes what
    the Keras model takes and returns what it returns.
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
        self._input_template, self.input_names = structure_from_names(signature["inputs"], "input")
        self._output_template, self.output_names = structure_from_names(
            signature["outputs"], "output"
        )
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

    def flatten_inputs(self, x: Any) -> list[np.ndarray]:
        """One array per file input (``input_names`` order) from ``x`` in the model's structure.

        ``x`` may also be a flat list in ``input_names`` order.

        Raises:
            ValueError: ``x`` does not have the model's input structure.
        """
        if len(self.input_names) == 1 and not isinstance(x, (Mapping, list, tuple)):
            return [np.asarray(x)]
        if (
            isinstance(x, (list, tuple))
            and len(x) == len(self.input_names)
            and all(not isinstance(v, (Mapping, list, tuple)) for v in x)
        ):
            return [np.asarray(v) for v in x]  # flat, in file order
        if (
            isinstance(x, Mapping)
            and isinstance(self._input_template, list)
            and len(x) == len(self.input_names)
        ):
            # a file whose dict keys could not be signature names: keras.tree's order
            return [np.asarray(x[key]) for key in sorted(x)]
        return [np.asarray(v) for v in _flatten_like(x, self._input_template, "x")]

    def predict(self, x: Any, batch_size: int = 64) -> Any:
        """Runs the model on ``x`` in batches.

        Args:
            x: The inputs in the structure the Keras model takes (one array,
                a list, or a dict of named inputs).
            batch_size: Examples per invoke (files with a fixed batch use theirs).

        Returns:
            The outputs in the Keras model's structure: one array, a list or a dict.
        """
        inputs = self.flatten_inputs(x)
        n = len(inputs[0])
        if any(len(a) != n for a in inputs):
            raise ValueError(
                f"x: the inputs have different numbers of examples "
                f"({', '.join(str(len(a)) for a in inputs)})"
            )
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
        return _pack_like(self._output_template, iter(outputs))

    def invoker(self, sample: Any) -> Callable[[], Any]:
        """A callable with no argument that runs one invoke on ``sample``'s first example.

        The input is converted (and quantized, for integer inputs) once, so a
        timing harness that calls it measures the invoke alone.

        Example:
            >>> run_once = TFLiteModel("model.tflite").invoker(x_test[:1])
            >>> run_once()
        """
        inputs = [a[:1] for a in self.flatten_inputs(sample)]
        feed = {
            name: _quantize(value, self._input_details[name])
            for name, value in zip(self.input_names, inputs)
        }
        runner = self._runner
        return lambda: runner(**feed)

    def latency_ms(self, sample: Any, runs: int = 50, warmup: int = 5) -> float:
        """Median wall time in milliseconds of one invoke on ``sample`` (batch of 1)."""
        if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
            raise ValueError(f"runs must be an integer >= 1, got {runs!r}")
        inputs = [a[:1] for a in self.flatten_inputs(sample)]
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


def structure_from_names(names: Sequence[str], prefix: str) -> tuple[Any, list[str]]:
    """Reads a model's input or output structure back from signature names.

    ``{prefix}_0, {prefix}_1, ...`` is one tensor or a flat list; other names are
    paths whose parts are joined by ``"."`` (number parts are list positions, the
    rest dict keys). Dict keys are ordered as ``keras.tree.flatten`` orders them
    (sorted), lists by position.

    Returns:
        ``(template, ordered)``: the structure with names as leaves, and the names
        in flattened order.
    """
    names = list(names)
    flat = re.compile(rf"{re.escape(prefix)}_(\d+)")
    if all(flat.fullmatch(n) for n in names):
        ordered = sorted(names, key=lambda n: int(flat.fullmatch(n).group(1)))
        return (ordered[0] if len(ordered) == 1 else ordered), ordered
    root: dict = {}
    for name in names:
        parts = [int(p) if p.isdigit() else p for p in name.split(".")]
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = name
    template = _lists_from_int_keys(root)
    ordered: list[str] = []
    _collect(template, ordered)
    return template, ordered


def _lists_from_int_keys(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    children = {k: _lists_from_int_keys(v) for k, v in node.items()}
    keys = sorted(children, key=str)
    if all(isinstance(k, int) for k in keys) and sorted(keys) == list(range(len(keys))):
        return [children[i] for i in range(len(keys))]
    return children


def _collect(template: Any, out: list[str]) -> None:
    if isinstance(template, dict):
        for key in sorted(template):
            _collect(template[key], out)
    elif isinstance(template, list):
        for item in template:
            _collect(item, out)
    else:
        out.append(template)


def _flatten_like(x: Any, template: Any, where: str) -> list[Any]:
    """``x``'s leaves in ``template``'s order; a clear error where the structures differ."""
    if isinstance(template, dict):
        if not isinstance(x, Mapping):
            raise ValueError(
                f"{where} is a {type(x).__name__}; the model takes a dict with keys "
                f"{sorted(template)}"
            )
        missing = [k for k in template if k not in x]
        if missing:
            raise ValueError(
                f"{where} has keys {sorted(x)}; the model takes {sorted(template)} "
                f"(missing {missing})"
            )
        return [
            leaf
            for key in sorted(template)
            for leaf in _flatten_like(x[key], template[key], f"{where}[{key!r}]")
        ]
    if isinstance(template, list):
        if not isinstance(x, (list, tuple)) or len(x) != len(template):
            got = f"{len(x)} items" if isinstance(x, (list, tuple)) else type(x).__name__
            raise ValueError(f"{where} has {got}; the model takes {len(template)} inputs")
        return [
            leaf
            for i, (value, sub) in enumerate(zip(x, template))
            for leaf in _flatten_like(value, sub, f"{where}[{i}]")
        ]
    if isinstance(x, (list, tuple)) and len(x) == 1:
        x = x[0]
    if isinstance(x, (Mapping, list, tuple)):
        raise ValueError(f"{where} is a {type(x).__name__}; the model takes one array here")
    return [x]


def _pack_like(template: Any, leaves: Any) -> Any:
    if isinstance(template, dict):
        return {key: _pack_like(template[key], leaves) for key in sorted(template)}
    if isinstance(template, list):
        return [_pack_like(item, leaves) for item in template]
    return next(leaves)


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
