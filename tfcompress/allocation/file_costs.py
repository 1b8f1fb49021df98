"""What each layer's weights cost in the exported file, read from the files themselves.

The converter does not store every layer the same way: a weight on a 4-bit grid
becomes an INT4 tensor in one graph and stays INT8 in another (the query
projection of an attention layer, whose ``1/sqrt(d)`` factor is folded into
it, leaves the grid), and 2-bit convolution filters take INT4. So the costs of
:func:`tfcompress.allocation.bits` are measured: the model is exported once per
candidate width with every allocated layer at that width, and each layer's
weight tensor is found in the file by name and weighed (its data, scales and
zero points). The rest of the file is what the widest file holds besides.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from ai_edge_litert import schema_py_generated as schema

__all__ = ["formula_bytes", "layer_tensor_bytes", "name_pattern"]

_WEIGHT_OPS = (
    schema.BuiltinOperator.FULLY_CONNECTED,
    schema.BuiltinOperator.CONV_2D,
    schema.BuiltinOperator.DEPTHWISE_CONV_2D,
)


def name_pattern(path: str, suffix_required: bool = True) -> re.Pattern:
    """How a layer's path appears in a converted tensor's name.

    Tracing appends ``_<n>`` to every name scope (layer ``"key"`` of
    ``"block0_attn"`` is ``"block0_attn_1/key_1/..."``); requiring that
    suffix keeps layer ``dense`` from matching layer ``dense_1``'s tensors.
    """
    suffix = r"_\d+" if suffix_required else r"(?:_\d+)?"
    parts = [re.escape(part) + suffix for part in path.split("/")]
    return re.compile(r"(?:^|/)" + "/".join(parts) + r"(?:/|$)")


def _weight_tensors(flatbuffer: bytes) -> list[tuple[str, int]]:
    """``(name, bytes)`` of every weight tensor of a FC/CONV/DEPTHWISE op, once each."""
    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        codes.append(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
    found: dict[tuple[int, int], tuple[str, int]] = {}
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            if codes[op.OpcodeIndex()] not in _WEIGHT_OPS or op.InputsLength() < 2:
                continue
            index = op.Inputs(1)
            if index < 0 or (g, index) in found:
                continue
            tensor = graph.Tensors(index)
            buffer = model.Buffers(tensor.Buffer())
            size = buffer.DataLength() if buffer is not None else 0
            quantization = tensor.Quantization()
            if quantization is not None:
                size += 4 * quantization.ScaleLength() + 8 * quantization.ZeroPointLength()
            name = tensor.Name().decode() if tensor.Name() else ""
            found[(g, index)] = (name, int(size))
    return list(found.values())


def layer_tensor_bytes(flatbuffer: bytes, layers: Sequence[str]) -> dict[str, int]:
    """Bytes of each layer's weight tensor in a .tflite file (data + scales + zero points).

    A tensor belongs to the layer whose path its name contains (see
    :func:`name_pattern`); fused names (``"a/MatMul;a/FakeQuant"``) are
    searched whole. A layer found in no tensor, or a tensor claimed by two
    layers, is left out of the result (the caller estimates those).

    Example:
        >>> layer_tensor_bytes(open("mlp_int8.tflite", "rb").read(), ["dense", "dense_1"])
        {'dense': 8204, 'dense_1': 1292}
    """
    tensors = _weight_tensors(flatbuffer)
    result: dict[str, int] = {}
    claimed: dict[int, list[str]] = {}
    for layer in layers:
        for required in (True, False):
            pattern = name_pattern(layer, required)
            hits = [i for i, (name, _) in enumerate(tensors) if pattern.search(name)]
            if hits:
                break
        if len(hits) == 1:
            claimed.setdefault(hits[0], []).append(layer)
    for index, owners in claimed.items():
        if len(owners) == 1:
            result[owners[0]] = tensors[index][1]
    return result


def formula_bytes(size: int, container: int) -> int:
    """``size`` weights at ``container`` bits each, rounded up to whole bytes."""
    return math.ceil(size * container / 8)
