"""One-shot layer rules: the weight matrix times the input vectors is the layer's output."""

import keras
import numpy as np
import pytest

from tfcompress.oneshot.rules import rule_for

# NumPy and Keras layers only: the same on every backend.
pytestmark = pytest.mark.jax


def _linear_output(layer, x):
    """The layer's output without bias and activation."""
    saved = layer.activation
    layer.activation = keras.activations.linear
    try:
        y = np.asarray(layer(x))
    finally:
        layer.activation = saved
    if getattr(layer, "bias", None) is not None:
        y = y - np.asarray(layer.bias)
    return y


def _check(layer, x, rtol=1e-4):
    rule, why = rule_for(layer)
    assert rule is not None, why
    w = rule.matrix()
    vectors = rule.input_vectors(np.asarray(x, np.float32))
    # grouped rules: (G, n, C) @ (G, C, R) -> (G, n, R)
    out = np.matmul(vectors, np.swapaxes(w, 1, 2)) if vectors.ndim == 3 else vectors @ w[0].T
    y = _linear_output(layer, x)
    return out, y, rule


@pytest.mark.parametrize(
    "kwargs",
    [
        {"padding": "same"},
        {"padding": "valid", "strides": 2},
        {"padding": "same", "strides": 2},
        {"padding": "same", "dilation_rate": 2},
        {"padding": "valid", "kernel_size": (2, 3)},
    ],
)
def test_conv2d_im2col_reproduces_the_convolution(kwargs):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 9, 3)).astype("float32")
    layer = keras.layers.Conv2D(4, kwargs.pop("kernel_size", 3), **kwargs)
    layer.build(x.shape)
    out, y, rule = _check(layer, x)
    np.testing.assert_allclose(out.reshape(y.shape), y, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(rule.kernel_from(rule.matrix()), np.asarray(layer.kernel))


@pytest.mark.parametrize("padding", ["causal", "same", "valid"])
def test_conv1d_im2col(padding):
    x = np.random.default_rng(1).normal(size=(2, 10, 3)).astype("float32")
    layer = keras.layers.Conv1D(5, 3, padding=padding, dilation_rate=2)
    layer.build(x.shape)
    out, y, _ = _check(layer, x)
    np.testing.assert_allclose(out.reshape(y.shape), y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("strides", [1, 2])
def test_depthwise_is_one_problem_per_channel(strides):
    x = np.random.default_rng(2).normal(size=(2, 6, 6, 3)).astype("float32")
    layer = keras.layers.DepthwiseConv2D(3, strides=strides, padding="same", depth_multiplier=2)
    layer.build(x.shape)
    out, y, rule = _check(layer, x)
    assert rule.groups == 3 and rule.rows == 2 and rule.columns == 9
    # out: (channels, n, multiplier) -> (n, channels * multiplier) as Keras orders it
    np.testing.assert_allclose(out.transpose(1, 0, 2).reshape(y.shape), y, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(rule.kernel_from(rule.matrix()), np.asarray(layer.kernel))


def test_multi_head_attention_projections():
    x = np.random.default_rng(3).normal(size=(2, 5, 8)).astype("float32")
    mha = keras.layers.MultiHeadAttention(2, 4)
    mha(x, x)
    for dense, inputs in [
        (mha._query_dense, x),
        (mha._value_dense, x),
        (mha._output_dense, np.random.default_rng(4).normal(size=(2, 5, 2, 4)).astype("float32")),
    ]:
        out, y, rule = _check(dense, inputs)
        np.testing.assert_allclose(out.reshape(y.shape), y, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(rule.kernel_from(rule.matrix()), np.asarray(dense.kernel))


def test_einsum_with_ellipsis_and_dense():
    x = np.random.default_rng(5).normal(size=(2, 3, 6)).astype("float32")
    layer = keras.layers.EinsumDense("...b,bc->...c", output_shape=4)
    layer.build(x.shape)
    out, y, _ = _check(layer, x)
    np.testing.assert_allclose(out.reshape(y.shape), y, rtol=1e-4, atol=1e-5)
    dense = keras.layers.Dense(3)
    dense.build(x.shape)
    out, y, _ = _check(dense, x)
    np.testing.assert_allclose(out.reshape(y.shape), y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("layer", "reason"),
    [
        (keras.layers.Conv2D(4, 3, groups=2), "grouped"),
        (keras.layers.Conv2DTranspose(4, 3), "transposed"),
        (keras.layers.Embedding(10, 4), "Embedding has no one-shot rule"),
        (keras.layers.EinsumDense("abc,acd->abd", output_shape=(None, 3)), "shared"),
    ],
)
def test_layers_without_a_rule_say_why(layer, reason):
    layer.build((2, 5, 4) if not isinstance(layer, keras.layers.Conv2D) else (2, 5, 5, 4))
    rule, why = rule_for(layer)
    assert rule is None and reason in why
