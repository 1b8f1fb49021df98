"""Per layer type: the weight matrix one-shot compression solves for, and its input vectors.

A rule maps a layer's kernel to a ``(G, R, C)`` stack of weight matrices
(``G`` independent problems, ``R`` output rows, ``C`` input columns; see
:mod:`tfcompress.oneshot.solvers`) and back, and turns one batch of the
layer's inputs into the input vectors whose Hessian ``2 X X^T / n`` the
solver needs:

* ``Dense``: the last axis of the input (every leading position is a vector);
  ``W = kernel^T``.
* ``Conv1D``/``Conv2D`` (``groups=1``; any strides, dilation, ``"same"``/
  ``"valid"``/``"causal"`` padding, either data format): im2col patches, ordered
  ``(kh, kw, in)`` like the kernel, so ``W`` is the kernel flattened to
  ``(kh kw in, out)`` and transposed; N:M groups run along the input channels.
* ``DepthwiseConv2D``: one problem per input channel (``G = in``), its
  ``kh kw`` patch taps as columns and its ``depth_multiplier`` filters as rows.
* ``EinsumDense`` (alone or as the query/key/value/output projections inside
  ``MultiHeadAttention``): the kernel letters summed with the input are the
  columns, those kept in the output the rows; the input's other letters index
  vectors.

Anything else has no rule.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

__all__ = ["LayerRule", "container_class", "rule_for", "supported_classes", "variable_numpy"]


def variable_numpy(variable: Any) -> np.ndarray:
    """A variable's value as float32 NumPy (without the array-protocol warning of TF variables)."""
    if keras.backend.backend() == "tensorflow":
        return np.asarray(variable.numpy(), np.float32)
    return np.asarray(keras.ops.convert_to_numpy(variable.value), np.float32)


class LayerRule:
    """How one layer's kernel and inputs look to the solvers (see the module docstring).

    Args:
        layer: A built layer of the rule's type.

    Attributes:
        layer: The layer.
        groups: ``G``, the number of independent problems.
    """

    groups: int = 1

    def __init__(self, layer: keras.layers.Layer):
        self.layer = layer

    @property
    def variable(self) -> Any:
        """The kernel variable."""
        return self.layer.kernel

    def kernel(self) -> np.ndarray:
        """The kernel's current value (float32)."""
        return variable_numpy(self.variable)

    def matrix_shape(self) -> tuple[int, int, int]:
        """``(G, R, C)``."""
        raise NotImplementedError

    @property
    def rows(self) -> int:
        """``R``: output rows of each problem."""
        return self.matrix_shape()[1]

    @property
    def columns(self) -> int:
        """``C``: input columns (the size of the Hessian)."""
        return self.matrix_shape()[2]

    def matrix(self) -> np.ndarray:
        """The kernel as ``(G, R, C)`` float32."""
        raise NotImplementedError

    def kernel_from(self, matrix: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`matrix`: a kernel-shaped array."""
        raise NotImplementedError

    def input_vectors(self, x: np.ndarray) -> np.ndarray:
        """One batch of the layer's input as vectors: ``(n, C)``, or ``(G, n, C)`` when grouped."""
        raise NotImplementedError


class DenseRule(LayerRule):
    """Dense: ``W = kernel^T``; every position of the input is a vector."""

    def matrix_shape(self):
        c, r = self.variable.shape
        return 1, int(r), int(c)

    def matrix(self):
        return self.kernel().T[None]

    def kernel_from(self, matrix):
        return np.ascontiguousarray(matrix[0].T)

    def input_vectors(self, x):
        return x.reshape(-1, x.shape[-1])


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def im2col(
    x: np.ndarray,
    kernel_size: tuple[int, int],
    strides: tuple[int, int],
    dilation: tuple[int, int],
    padding: str,
) -> np.ndarray:
    """Patches of a channels-last ``(B, H, W, C)`` batch: ``(B, oh, ow, kh, kw, C)``.

    ``padding`` is ``"valid"``, ``"same"`` (TensorFlow's split: the extra row or
    column at the end) or ``"causal"`` (all of it before, along the width).
    """
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, strides, dilation
    if padding == "same":
        pads = [_same_padding(x.shape[1], kh, sh, dh), _same_padding(x.shape[2], kw, sw, dw)]
    elif padding == "causal":
        pads = [(0, 0), ((kw - 1) * dw, 0)]
    else:
        pads = [(0, 0), (0, 0)]
    if any(p for pair in pads for p in pair):
        x = np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)])
    span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, (span_h, span_w), axis=(1, 2))
    windows = windows[:, ::sh, ::sw, :, ::dh, ::dw]  # (B, oh, ow, C, kh, kw)
    return windows.transpose(0, 1, 2, 4, 5, 3)


class ConvRule(LayerRule):
    """Conv1D and Conv2D with ``groups == 1``."""

    def _geometry(self):
        layer = self.layer
        if isinstance(layer, keras.layers.Conv1D):
            return (
                (1, layer.kernel_size[0]),
                (1, layer.strides[0]),
                (1, layer.dilation_rate[0]),
            )
        return tuple(layer.kernel_size), tuple(layer.strides), tuple(layer.dilation_rate)

    def matrix_shape(self):
        shape = tuple(int(d) for d in self.variable.shape)
        return 1, shape[-1], math.prod(shape[:-1])

    def matrix(self):
        kernel = self.kernel()
        return kernel.reshape(-1, kernel.shape[-1]).T[None]

    def kernel_from(self, matrix):
        return np.ascontiguousarray(matrix[0].T).reshape(tuple(self.variable.shape))

    def input_vectors(self, x):
        if self.layer.data_format == "channels_first":
            x = np.moveaxis(x, 1, -1)
        if isinstance(self.layer, keras.layers.Conv1D):
            x = x[:, None]
        size, strides, dilation = self._geometry()
        patches = im2col(x, size, strides, dilation, self.layer.padding)
        return patches.reshape(-1, self.columns)


class DepthwiseRule(LayerRule):
    """DepthwiseConv2D: one problem per input channel."""

    @property
    def groups(self) -> int:
        return int(self.variable.shape[2])

    def matrix_shape(self):
        kh, kw, channels, multiplier = (int(d) for d in self.variable.shape)
        return channels, multiplier, kh * kw

    def matrix(self):
        kh, kw, channels, multiplier = self.kernel().shape
        return self.kernel().reshape(kh * kw, channels, multiplier).transpose(1, 2, 0)

    def kernel_from(self, matrix):
        return np.ascontiguousarray(matrix.transpose(2, 0, 1)).reshape(tuple(self.variable.shape))

    def input_vectors(self, x):
        layer = self.layer
        if layer.data_format == "channels_first":
            x = np.moveaxis(x, 1, -1)
        patches = im2col(
            x,
            tuple(layer.kernel_size),
            tuple(layer.strides),
            tuple(layer.dilation_rate),
            layer.padding,
        )
        channels = patches.shape[-1]
        return patches.reshape(-1, self.columns, channels).transpose(2, 0, 1)


def _einsum_parts(equation: str) -> tuple[str, str, str]:
    inputs, output = equation.replace(" ", "").split("->")
    x, kernel = inputs.split(",")
    return x, kernel, output


def einsum_supported(layer: keras.layers.EinsumDense) -> str | None:
    """Why an EinsumDense has no rule (None when it has one)."""
    try:
        x, kernel, output = _einsum_parts(layer.equation)
    except ValueError:
        return f"equation {layer.equation!r} is not 'input,kernel->output'"
    if "." in kernel:
        return "its kernel has an ellipsis"
    letters = x.replace("...", "")
    for c in kernel:
        if c in letters and c in output:
            return f"kernel axis {c!r} is shared by input and output (a batched matmul)"
        if c not in letters and c not in output:
            return f"kernel axis {c!r} is summed away"
    for c in letters:
        if c not in kernel and c not in output:
            return f"input axis {c!r} is summed away"
    if not any(c in letters for c in kernel):
        return "nothing is contracted"
    return None


class EinsumRule(LayerRule):
    """EinsumDense with a plain contraction (the MultiHeadAttention projections)."""

    def _letters(self):
        x, kernel, output = _einsum_parts(self.layer.equation)
        x_letters = x.replace("...", "")
        contracted = [c for c in kernel if c in x_letters]
        free = [c for c in kernel if c in output]
        return x, kernel, contracted, free

    def matrix_shape(self):
        _, kernel, contracted, free = self._letters()
        shape = dict(zip(kernel, (int(d) for d in self.variable.shape)))
        return 1, math.prod(shape[c] for c in free), math.prod(shape[c] for c in contracted)

    def _permutation(self):
        _, kernel, contracted, free = self._letters()
        return [kernel.index(c) for c in free + contracted]

    def matrix(self):
        _, r, c = self.matrix_shape()
        return self.kernel().transpose(self._permutation()).reshape(1, r, c)

    def kernel_from(self, matrix):
        permutation = self._permutation()
        shape = [int(self.variable.shape[i]) for i in permutation]
        return np.ascontiguousarray(matrix[0].reshape(shape).transpose(np.argsort(permutation)))

    def input_vectors(self, x):
        spec, _, contracted, _ = self._letters()
        if "..." in spec:
            head, tail = spec.split("...")
            spare = [chr(ord("A") + i) for i in range(x.ndim - len(head) - len(tail))]
            spec = head + "".join(spare) + tail
        order = [i for i, c in enumerate(spec) if c not in contracted]
        order += [spec.index(c) for c in contracted]
        return x.transpose(order).reshape(-1, self.columns)


def container_class() -> tuple[type, ...]:
    """Layers whose sublayers are the targets (MultiHeadAttention)."""
    return (keras.layers.MultiHeadAttention,)


def supported_classes() -> tuple[str, ...]:
    """Class names with a rule, for messages."""
    return (
        "Dense",
        "Conv1D",
        "Conv2D",
        "DepthwiseConv2D",
        "EinsumDense",
        "MultiHeadAttention (its projections)",
    )


def rule_for(layer: keras.layers.Layer) -> tuple[LayerRule | None, str]:
    """The rule of ``layer`` and, when there is none, why.

    Subclasses of the supported classes (the tfcompress ``Quant*`` layers
    included) use the rule of their base class.

    Returns:
        ``(rule or None, reason)``.
    """
    layers = keras.layers
    if not layer.built:
        return None, "the layer is not built"
    if getattr(layer, "lora_enabled", False):
        return None, "LoRA is enabled (merge it into the kernel first)"
    kernel = getattr(layer, "kernel", None)
    if isinstance(kernel, keras.Variable) and "float" not in keras.backend.standardize_dtype(
        kernel.dtype
    ):
        return None, f"its kernel is already {kernel.dtype} (quantized by Keras)"
    if isinstance(layer, layers.DepthwiseConv2D):
        return DepthwiseRule(layer), ""
    if isinstance(layer, (layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose)):
        return None, "transposed convolutions have no rule"
    if isinstance(layer, (layers.SeparableConv1D, layers.SeparableConv2D)):
        return None, "separable convolutions have no rule (two kernels)"
    if isinstance(layer, (layers.Conv1D, layers.Conv2D)) and not isinstance(
        layer, layers.DepthwiseConv1D
    ):
        if getattr(layer, "groups", 1) != 1:
            return None, f"grouped convolution (groups={layer.groups})"
        return ConvRule(layer), ""
    if isinstance(layer, layers.EinsumDense):
        why = einsum_supported(layer)
        return (None, why) if why else (EinsumRule(layer), "")
    if isinstance(layer, layers.Dense):
        return DenseRule(layer), ""
    return None, f"{type(layer).__name__} has no one-shot rule"
