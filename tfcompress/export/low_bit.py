"""Low-bit weights in .tflite files: INT4 and INT2 tensors for weights on a narrow grid.

A model quantized to 2-4 bits (``tfc.oneshot.quantize``, QAT) holds weights
``w = k * s`` with small integers ``k``. The TFLite converter does not always
store them in as few bits:

- Where it keeps the fake-quant ranges (a quantization-aware graph), it writes
  an INT4 tensor for 2 to 4 bits, so a 2-bit grid ``{-1, 0, 1} * s`` takes 4
  bits per weight as the integers ``{-7, 0, 7}`` with scale ``s / 7``.
- Where it calibrates (a model with layers that have no ranges of their own,
  such as attention and LayerNorm in a transformer), it re-quantizes every
  weight to INT8 per output channel: a row whose largest ``|k|`` is ``m``
  becomes ``v = round(k * 127 / m)`` with scale ``m s / 127``.

:func:`pack_low_bit_weights` rewrites both. For each weight tensor of a
``FULLY_CONNECTED``, ``CONV_2D`` or ``DEPTHWISE_CONV_2D`` op it looks, per
quantization scale, for the smallest ``m <= 7`` such that the stored integers
are ``k * q / m`` rounded, for integers ``|k| <= m`` (``q`` the container's
largest level; at an exact half either rounding is accepted, since float32
noise in the converter's scale decides it). If every channel has one, the tensor becomes INT4 (``|k| <=
7``) holding ``k`` with scale ``scale * q / m``, that is ``k * s``: the
weights the Keras model computes with (an INT8 tensor's rounding of them is
undone). A ``FULLY_CONNECTED`` weight whose channels all have ``m = 1`` becomes
INT2 (four weights per byte, first in the lowest bits). Weights with more
levels (8-bit) never match and are left alone.

The integer bias of the op (in units of input scale x weight scale) is
rescaled with the weight scale, which rounds it: with the kernel change below,
an int8 output can move by a step or two.

What LiteRT 2.3 runs, checked: INT4 weights in all three ops, INT2 only in
``FULLY_CONNECTED`` (``CONV_2D`` fails at run time with "Weight type INT2 not
supported for filter", ``DEPTHWISE_CONV_2D`` fails to prepare). A rewritten
tensor may run in another kernel than before (the builtin one rather than
XNNPACK), whose fixed-point requantization rounds differently. Export
verification compares the final file with Keras either way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

__all__ = ["LowBitPacking", "pack_low_bit_weights"]

_OPS = {
    schema.BuiltinOperator.FULLY_CONNECTED: "fc",
    schema.BuiltinOperator.CONV_2D: "conv",
    schema.BuiltinOperator.DEPTHWISE_CONV_2D: "conv",
}
_LEVELS = {schema.TensorType.INT8: 127, schema.TensorType.INT4: 7}


@dataclasses.dataclass(frozen=True)
class LowBitPacking:
    """What :func:`pack_low_bit_weights` did.

    Attributes:
        flatbuffer: The (possibly) rewritten file.
        int4: Names of the weight tensors now stored as INT4.
        int2: Names of the weight tensors now stored as INT2.
        saved_bytes: Bytes of weight data saved (before flatbuffer padding).
    """

    flatbuffer: bytes
    int4: tuple[str, ...]
    int2: tuple[str, ...]
    saved_bytes: int


def _unpack(data: np.ndarray, tensor_type: int, count: int) -> np.ndarray:
    if tensor_type == schema.TensorType.INT8:
        return data.view(np.int8)[:count].astype(np.int16)
    low = (data & 0x0F).astype(np.int16)
    high = (data >> 4).astype(np.int16)
    values = np.stack([low, high], axis=1).reshape(-1)[:count]
    return np.where(values > 7, values - 16, values)


def _pack(values: np.ndarray, bits: int) -> np.ndarray:
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    codes = (values.astype(np.int16) & mask).astype(np.uint8)
    codes = np.concatenate([codes, np.zeros((-len(codes)) % per_byte, np.uint8)])
    codes = codes.reshape(-1, per_byte)
    packed = np.zeros(len(codes), np.uint8)
    for i in range(per_byte):
        packed |= codes[:, i] << (bits * i)
    return packed


def _channel_rows(values: np.ndarray, shape: list[int], quantization) -> np.ndarray | None:
    """``values`` as ``(channels, n)``, one row per scale, or None if the layout is unknown."""
    scales = quantization.scale if quantization is not None else None
    if scales is None or len(scales) == 0:
        return None
    if len(scales) == 1:
        return values.reshape(1, -1)
    axis = int(quantization.quantizedDimension)
    if axis >= len(shape) or shape[axis] != len(scales):
        return None
    return np.moveaxis(values.reshape(shape), axis, 0).reshape(len(scales), -1)


def _lattice(rows: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per row the smallest ``m <= 7`` with ``rows == round(k * top / m)``: ``(k, m)``, or None."""
    ks = np.zeros_like(rows)
    ms = np.zeros(len(rows), np.int16)
    for r, row in enumerate(rows):
        largest = int(np.abs(row).max())
        if largest == 0:
            ms[r] = 1
            continue
        for m in range(1, 8):
            k = np.round(row.astype(np.float64) * m / top)
            # The stored integers are k * top / m rounded; where that is exactly half-way (k odd,
            # m even) float32 noise in the converter's scale decides the direction, so either
            # neighbour is accepted: every integer within half a step (of 1) of its lattice point.
            near = np.abs(row - k * top / m) <= 0.5 + 1e-6
            if np.abs(k).max() == m and np.all(near):
                ks[r], ms[r] = k.astype(np.int16), m
                break
        else:
            return None
    return ks, ms


def _from_rows(rows: np.ndarray, shape: list[int], quantization, channels: int) -> np.ndarray:
    if channels == 1:
        return rows.reshape(-1)
    axis = int(quantization.quantizedDimension)
    moved = [shape[axis]] + [d for i, d in enumerate(shape) if i != axis]
    return np.moveaxis(rows.reshape(moved), 0, axis).reshape(-1)


def _per_tensor(quantization) -> None:
    """Keeps the first of equal per-channel scales (the caller checked they are equal)."""
    if quantization.scale is not None and len(quantization.scale) > 1:
        quantization.scale = [float(quantization.scale[0])]
        quantization.zeroPoint = [0]
        quantization.quantizedDimension = 0


def pack_low_bit_weights(flatbuffer: bytes, only: Collection[str] | None = None) -> LowBitPacking:
    """Stores the weights of a .tflite file that lie on a 2-4 bit grid as INT4 or INT2.

    See the module docstring for the rule. A file without such weights comes
    back unchanged (the same bytes).

    Args:
        flatbuffer: The bytes of a .tflite file.
        only: Rewrite only the tensors of these names (None: every one that qualifies).

    Returns:
        A :class:`LowBitPacking` with the new bytes and what changed.

    Example:
        >>> packed = pack_low_bit_weights(open("lm_gptq4.tflite", "rb").read())
        >>> len(packed.int4), packed.saved_bytes
        (19, 245760)
    """
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes or []]
    users: dict[int, int] = {}
    for subgraph in model.subgraphs or []:
        for tensor in subgraph.tensors or []:
            users[tensor.buffer] = users.get(tensor.buffer, 0) + 1
    int4: list[str] = []
    int2: list[str] = []
    saved = 0
    for subgraph in model.subgraphs or []:
        weights: dict[int, tuple[str, int]] = {}  # weight tensor -> (op kind, bias tensor)
        shared: set[int] = set()
        for op in subgraph.operators or []:
            kind = _OPS.get(codes[op.opcodeIndex])
            if kind is not None and len(op.inputs) > 1 and op.inputs[1] >= 0:
                index = int(op.inputs[1])
                if index in weights:  # read by two ops: leave it as it is
                    shared.add(index)
                bias = int(op.inputs[2]) if len(op.inputs) > 2 else -1
                weights[index] = (kind, bias)
        for index, (kind, bias_index) in sorted(weights.items()):
            if index in shared:
                continue
            tensor = subgraph.tensors[index]
            buffer = model.buffers[tensor.buffer] if tensor.buffer else None
            if (
                tensor.type not in _LEVELS
                or buffer is None
                or buffer.data is None
                or users.get(tensor.buffer, 0) != 1
            ):
                continue
            name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
            if only is not None and name not in only:
                continue
            shape = [int(d) for d in tensor.shape]
            count = int(np.prod(shape))
            values = _unpack(np.asarray(buffer.data, np.uint8), tensor.type, count)
            rows = _channel_rows(values, shape, tensor.quantization)
            found = None if rows is None else _lattice(rows, _LEVELS[tensor.type])
            if found is None:
                continue
            ks, ms = found
            to_int2 = kind == "fc" and int(ms.max()) == 1
            if tensor.type == schema.TensorType.INT4 and not to_int2:
                continue  # already as narrow as this op allows
            top = _LEVELS[tensor.type]
            bias = subgraph.tensors[bias_index] if bias_index >= 0 else None
            bias_buffer = model.buffers[bias.buffer] if bias is not None and bias.buffer else None
            if bias is not None and (
                bias_buffer is None
                or bias_buffer.data is None
                or bias.type not in (schema.TensorType.INT32, schema.TensorType.INT64)
                or users.get(bias.buffer, 0) != 1
            ):
                continue  # a float or shared bias: the rescaling below would be wrong
            flat = _from_rows(ks, shape, tensor.quantization, len(ms))
            factor = top / ms.astype(np.float64)  # new scale / old scale, per channel
            scales = np.asarray(tensor.quantization.scale, np.float64) * factor
            if bias is not None:
                # The kernel adds the integer bias to the accumulator, so the bias is in units
                # of input scale x weight scale: rescale it with the weight scale.
                dtype = np.int32 if bias.type == schema.TensorType.INT32 else np.int64
                values_b = np.asarray(bias_buffer.data, np.uint8).view(dtype).astype(np.float64)
                per = np.broadcast_to(factor, values_b.shape) if len(factor) > 1 else factor[0]
                new_bias = np.round(values_b / per).astype(dtype)
                bias_buffer.data = new_bias.view(np.uint8)
                if bias.quantization is not None and bias.quantization.scale is not None:
                    bias.quantization.scale = [
                        float(v) * float(f)
                        for v, f in zip(
                            bias.quantization.scale,
                            np.broadcast_to(factor, (len(bias.quantization.scale),)),
                        )
                    ]
            if np.allclose(scales, scales[0], rtol=1e-5, atol=0):
                scales = scales[:1]  # one grid step for the whole tensor (a per-tensor grid)
                tensor.quantization.zeroPoint = [0]
                tensor.quantization.quantizedDimension = 0
                if bias is not None and bias.quantization is not None:
                    # A per-tensor weight takes LiteRT's per-tensor path, which reads the bias's
                    # single scale (a per-channel bias has none and fails to prepare).
                    _per_tensor(bias.quantization)
            tensor.quantization.scale = [float(v) for v in scales]
            packed = _pack(flat, 2 if to_int2 else 4)
            saved += len(buffer.data) - len(packed)
            buffer.data = packed
            tensor.type = schema.TensorType.INT2 if to_int2 else schema.TensorType.INT4
            (int2 if to_int2 else int4).append(name)
    if not int4 and not int2:
        return LowBitPacking(bytes(flatbuffer), (), (), 0)
    builder = flatbuffers.Builder(len(flatbuffer))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return LowBitPacking(bytes(builder.Output()), tuple(int4), tuple(int2), saved)
