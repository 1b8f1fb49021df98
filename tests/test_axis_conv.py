"""Strided kh x 1 / 1 x kw depthwise stages at equal strides (TensorFlow's CPU kernel without oneDNN)."""

import itertools

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.core import axis_conv
from tfcompress.layers import LowRankConv2D


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _reference_depthwise(x, kernel, strides, padding, dilation):
    """Direct NumPy depthwise convolution with TensorFlow's padding rule."""
    n, h, w, c = x.shape
    kh, kw, _, m = kernel.shape
    pads = []
    for size, k, s, d in zip((h, w), (kh, kw), strides, dilation):
        pads.append((0, 0) if padding == "valid" else axis_conv.same_pads(size, k, s, d))
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    out_h = (xp.shape[1] - (kh - 1) * dilation[0] - 1) // strides[0] + 1
    out_w = (xp.shape[2] - (kw - 1) * dilation[1] - 1) // strides[1] + 1
    y = np.zeros((n, out_h, out_w, c, m))
    for i, j, a, b in itertools.product(range(out_h), range(out_w), range(kh), range(kw)):
        patch = xp[:, i * strides[0] + a * dilation[0], j * strides[1] + b * dilation[1], :]
        y[:, i, j] += patch[:, :, None] * kernel[a, b][None]
    return y.reshape(n, out_h, out_w, c * m)


@pytest.mark.jax
@pytest.mark.parametrize(
    "kernel_hw, strides, padding, size",
    [
        ((3, 1), (2, 1), "same", (9, 7)),
        ((3, 1), (2, 1), "valid", (8, 7)),
        ((1, 4), (1, 3), "same", (5, 10)),
        ((1, 2), (1, 2), "valid", (6, 9)),
        ((2, 1), (3, 1), "same", (10, 4)),
    ],
)
def test_folded_depthwise_matches_a_numpy_reference(kernel_hw, strides, padding, size):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *size, 3)).astype("float32")
    kernel = rng.standard_normal((*kernel_hw, 3, 2)).astype("float32")
    got = _numpy(axis_conv.depthwise_conv(x, kernel, strides, padding, "channels_last", (1, 1)))
    expected = _reference_depthwise(x, kernel, strides, padding, (1, 1))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_folded_depthwise_runs_inside_a_traced_function_with_an_unknown_batch():
    kernel = np.random.default_rng(1).standard_normal((3, 1, 4, 1)).astype("float32")
    inputs = keras.Input((8, 6, 4))
    outputs = keras.layers.Lambda(
        lambda t: axis_conv.depthwise_conv(t, kernel, (2, 1), "same", "channels_last", (1, 1))
    )(inputs)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(2).standard_normal((3, 8, 6, 4)).astype("float32")
    expected = _reference_depthwise(x, kernel, (2, 1), "same", (1, 1))
    np.testing.assert_allclose(_numpy(model.predict(x, verbose=0)), expected, atol=1e-5)


def test_equal_stride_split_pads_like_tensorflow_or_says_why_not():
    split = axis_conv.equal_stride_split((2, 2), (3, 3), (1, 1), "same", (8, 9))
    assert split.pads == ((0, 1), (1, 1))  # 8: total 1; 9: total 2
    assert split.vertical_strides == (1, 1) and split.horizontal_strides == (2, 2)
    assert split.padding == "valid"
    assert "differ" in axis_conv.equal_stride_split((2, 1), (3, 3), (1, 1), "valid", (8, 8))
    assert "unknown" in axis_conv.equal_stride_split((2, 2), (3, 3), (1, 1), "same", (None, 8))
    assert axis_conv.equal_stride_split((2, 2), (3, 3), (1, 1), "valid", (None, None)).pads == (
        (0, 0),
        (0, 0),
    )


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_expanded_strided_cp_has_only_equal_depthwise_strides_and_equal_outputs(padding):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((9, 8, 3))
    y = LowRankConv2D(5, 3, 2, "cp", strides=2, padding=padding)(inputs)
    model = keras.Model(inputs, y)
    expanded = tfc.transforms.expand_lowrank(model)
    chain = next(x for x in expanded.layers if isinstance(x, keras.Sequential))
    depthwise = [x for x in chain.layers if isinstance(x, keras.layers.DepthwiseConv2D)]
    assert [tuple(x.strides) for x in depthwise] == [(1, 1), (2, 2)]
    pads = [x for x in chain.layers if isinstance(x, keras.layers.ZeroPadding2D)]
    assert len(pads) == (1 if padding == "same" else 0)
    x = np.random.default_rng(3).standard_normal((2, 9, 8, 3)).astype("float32")
    np.testing.assert_allclose(_numpy(expanded(x)), _numpy(model(x)), atol=1e-5)
