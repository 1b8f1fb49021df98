"""Strided ``kh x 1`` / ``1 x kw`` depthwise convolutions that run on every CPU.

Factored convolutions (CP, flattened blocks) split a strided ``kh x kw``
convolution into a vertical stage with strides ``(sh, 1)`` and a horizontal
one with strides ``(1, sw)``. TensorFlow's CPU depthwise kernel accepts only
equal strides unless oneDNN is on, and TensorFlow turns oneDNN on only on
CPUs with AVX-512 VNNI / AMX: on AVX2-only CPUs those stages fail with
"Current implementation only supports equal length strides". Two exact
rewrites keep every depthwise convolution at equal strides:

* :func:`depthwise_conv` (our own layers): the axis whose kernel size and
  stride are 1 is folded into the batch, so the convolution sees a 1-wide
  map and can take the other axis' stride on both axes; no extra work.
* :func:`equal_stride_split` (graphs of stock Keras layers, which cannot
  reshape the batch): pad explicitly, run the vertical stage at stride 1 and
  give both strides to the horizontal one (``1 x kw``, so its row stride
  only picks rows). The vertical stage then runs on every row: ``sh`` times
  its MACs, small beside the full-resolution 1x1 stage before it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from keras import ops

__all__ = ["EqualStrideSplit", "depthwise_conv", "equal_stride_split", "same_pads"]


def same_pads(size: int | None, k: int, s: int, d: int) -> tuple[int, int] | None:
    """TensorFlow's 'same' padding ``(before, after)`` on one axis; None if it needs an unknown size.

    ``total = max((ceil(n / s) - 1) s + (k - 1) d + 1 - n, 0)``, ``before = total // 2``.
    """
    extent = (k - 1) * d + 1
    if s == 1 or extent == 1:  # a 1-wide kernel never pads: (ceil(n/s) - 1) * s + 1 <= n
        total = extent - 1
    elif size is None:
        return None
    else:
        out = -(-size // s)
        total = max((out - 1) * s + extent - size, 0)
    return total // 2, total - total // 2


@dataclasses.dataclass(frozen=True)
class EqualStrideSplit:
    """How a ``kh x 1`` then ``1 x kw`` pair computes a strided convolution at equal strides.

    Attributes:
        pads: ``((top, bottom), (left, right))`` zero padding before the pair.
        vertical_strides: ``(1, 1)``.
        horizontal_strides: ``(s, s)``.
        padding: ``"valid"`` for both stages (the padding is explicit).
    """

    pads: tuple[tuple[int, int], tuple[int, int]]
    vertical_strides: tuple[int, int] = (1, 1)
    horizontal_strides: tuple[int, int] = (1, 1)
    padding: str = "valid"


def equal_stride_split(
    strides: tuple[int, int],
    kernel_size: tuple[int, int],
    dilation: tuple[int, int],
    padding: str,
    input_hw: tuple[int | None, int | None],
) -> EqualStrideSplit | str:
    """The equal-stride form of a strided ``kh x 1`` / ``1 x kw`` pair, or why there is none.

    Returns a string (the reason) when the strides differ (``sh != sw``) or
    when 'same' padding with strides > 1 needs an input size that is unknown.
    """
    sh, sw = strides
    if sh != sw:
        return (
            f"its strides {tuple(strides)} differ: TensorFlow's CPU depthwise kernel needs equal "
            "strides unless oneDNN is on"
        )
    if padding == "valid":
        pads = ((0, 0), (0, 0))
    else:
        axes = [
            same_pads(n, k, s, d) for n, k, s, d in zip(input_hw, kernel_size, strides, dilation)
        ]
        if None in axes:
            return (
                "its 'same' padding with strides > 1 depends on the input size, which is "
                "unknown; the factored stages need it to pad explicitly"
            )
        pads = (axes[0], axes[1])  # type: ignore[assignment]
    return EqualStrideSplit(pads=pads, horizontal_strides=(sh, sh))


def depthwise_conv(
    x: Any,
    kernel: Any,
    strides: tuple[int, int],
    padding: str,
    data_format: str,
    dilation_rate: tuple[int, int],
) -> Any:
    """``keras.ops.depthwise_conv`` that also runs unequal strides on TensorFlow's CPU kernel.

    With equal strides it is ``ops.depthwise_conv``. When the kernel is 1
    wide, with stride 1, on one axis (a CP or flattened stage), that axis is
    folded into the batch (``(N, H, W, C) -> (N W, H, 1, C)`` for a
    ``kh x 1`` kernel, ``(N H, 1, W, C)`` for ``1 x kw``), where a 1-wide map
    takes the other stride on both axes with the same output and padding.
    """
    sh, sw = strides
    kh, kw = int(kernel.shape[0]), int(kernel.shape[1])
    vertical = kw == 1 and sw == 1 and dilation_rate[1] == 1
    horizontal = kh == 1 and sh == 1 and dilation_rate[0] == 1
    if sh == sw or not (vertical or horizontal) or data_format != "channels_last":
        # Nothing to fold (or channels_first, which TensorFlow's CPU convolutions reject anyway).
        return ops.depthwise_conv(
            x, kernel, strides=strides, padding=padding, data_format=data_format,
            dilation_rate=dilation_rate,
        )  # fmt: skip
    shape = ops.shape(x)
    n, h, w, c = shape[0], shape[1], shape[2], x.shape[3]
    if vertical:  # fold the width into the batch: (N, W, H, C) -> (N W, H, 1, C)
        folded = ops.reshape(ops.transpose(x, (0, 2, 1, 3)), (-1, h, 1, c))
        stride = sh
    else:  # fold the height into the batch: (N H, 1, W, C)
        folded = ops.reshape(x, (-1, 1, w, c))
        stride = sw
    y = ops.depthwise_conv(
        folded, kernel, strides=(stride, stride), padding=padding, data_format="channels_last",
        dilation_rate=dilation_rate,
    )  # fmt: skip
    out_c = y.shape[3]
    if vertical:
        return ops.transpose(ops.reshape(y, (n, w, ops.shape(y)[1], out_c)), (0, 2, 1, 3))
    return ops.reshape(y, (n, h, ops.shape(y)[2], out_c))
