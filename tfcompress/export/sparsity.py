"""Sparse weights in .tflite files: TFLite's sparse encoding, and the sparsity a file holds.

TFLite can store a mostly-zero weight tensor in a compressed sparse format
(``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``), expanded by a ``DENSIFY`` op at
load time. On this stack (TF 2.21, LiteRT 2.3) that helps float32/float16
files (several times fewer bytes, still delegated to XNNPACK), but a
sparse-encoded *int8* file fails to prepare in the default XNNPACK delegate
("failed to delegate FULLY_CONNECTED") and gzips worse than the dense int8
file. So ``sparsity="auto"`` encodes sparsely only when the result runs with
the default delegate and is smaller; dense int8 files of pruned models still
shrink a lot under gzip.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

__all__ = ["FileSparsity", "file_sparsity", "model_sparsity", "validate_sparsity_mode"]

SPARSITY_MODES = ("auto", True, False)
AUTO_THRESHOLD = 0.5  # below this fraction of zeros the dense file is smaller anyway

_NUMPY_TYPES = {0: np.float32, 1: np.float16, 9: np.int8, 3: np.uint8, 7: np.int16}


def validate_sparsity_mode(sparsity: object) -> str | bool:
    if not (sparsity == "auto" or isinstance(sparsity, bool)):
        raise ValueError(
            f"sparsity={sparsity!r} is not supported; expected 'auto' (sparse encoding when it "
            "makes a smaller file that runs with the default delegate), True or False"
        )
    return sparsity


def model_sparsity(model: keras.Model) -> float:
    """Fraction of exact zeros over a Keras model's kernel-like (rank >= 2) weights."""
    zeros = total = 0
    for variable in model.weights:
        if len(variable.shape) >= 2:
            value = np.asarray(keras.ops.convert_to_numpy(variable))
            zeros += int(np.count_nonzero(value == 0))
            total += value.size
    return zeros / total if total else 0.0


@dataclasses.dataclass(frozen=True)
class FileSparsity:
    """Weight sparsity as stored in a .tflite file.

    Attributes:
        weight_sparsity: Fraction of zeros over constant weight tensors of
            rank >= 2 (sparse-encoded tensors count their implicit zeros).
        sparse_tensors: How many tensors use TFLite's sparse encoding.
        weight_elements: Elements of those weight tensors.
    """

    weight_sparsity: float
    sparse_tensors: int
    weight_elements: int


def file_sparsity(flatbuffer: bytes) -> FileSparsity:
    """Reads every constant weight tensor of a .tflite flatbuffer and counts its zeros."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(flatbuffer, 0)
    zeros = total = sparse = 0
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            dtype = _NUMPY_TYPES.get(tensor.Type())
            shape = tensor.ShapeAsNumpy() if tensor.ShapeLength() else np.zeros(0, int)
            if dtype is None or len(shape) < 2:
                continue
            buffer = model.Buffers(tensor.Buffer())
            if buffer is None:
                continue
            if buffer.DataLength():
                data = buffer.DataAsNumpy().tobytes()
            elif buffer.Offset() > 1:
                data = flatbuffer[buffer.Offset() : buffer.Offset() + buffer.Size()]
            else:
                continue  # an activation, not a constant
            values = np.frombuffer(data, dtype=dtype)
            elements = int(np.prod(shape))
            stored_zeros = int(np.count_nonzero(values == 0))
            if tensor.Sparsity() is not None:
                sparse += 1
                zeros += elements - values.size + stored_zeros
            else:
                zeros += stored_zeros
            total += elements
    return FileSparsity(zeros / total if total else 0.0, sparse, total)


def runs_with_default_delegate(flatbuffer: bytes, num_threads: int | None = None) -> bool:
    """True when the LiteRT interpreter (default delegates, XNNPACK) prepares and runs it."""
    from tfcompress.export.interpreter import TFLiteModel

    try:
        lite = TFLiteModel(flatbuffer, num_threads=num_threads)
        inputs = []
        for name in lite.input_names:
            detail = lite.input_details[name]
            shape = [1 if d < 0 else int(d) for d in detail["shape_signature"]]
            inputs.append(np.zeros(shape, np.float32))
        lite.predict(inputs if len(inputs) > 1 else inputs[0])
    except (RuntimeError, ValueError):
        return False
    return True
