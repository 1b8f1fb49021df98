"""LowRankDense and LowRankConv2D: shared layer checks, SVD initialisation against NumPy, errors."""

import inspect

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tests.layer_checks import check_layer
from tfcompress.layers import LowRankConv2D, LowRankDense
from tfcompress.lowrank.conv_decompositions import conv_decomposition


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


# --- shared checks --------------------------------------------------------
@pytest.mark.jax
def test_lowrank_dense_layer_checks(tmp_path):
    check_layer(lambda: LowRankDense(6, rank=3, activation="relu"), (4, 10), tmp_path)


def test_lowrank_dense_on_3d_inputs_without_bias(tmp_path):
    check_layer(lambda: LowRankDense(5, rank=2, use_bias=False), (2, 3, 7), tmp_path)


@pytest.mark.parametrize(
    "decomposition, rank, kwargs",
    [
        ("channel", 4, {"padding": "same", "activation": "relu"}),
        ("spatial", 3, {"strides": 2}),
        ("tucker2", (2, 3), {"padding": "same", "use_bias": False}),
    ],
)
def test_lowrank_conv2d_layer_checks(tmp_path, decomposition, rank, kwargs):
    check_layer(
        lambda: LowRankConv2D(6, 3, rank=rank, decomposition=decomposition, **kwargs),
        (2, 7, 7, 3),
        tmp_path,
        atol=1e-5,
    )


def test_signatures_match_keras_layers():
    def params(cls, skip):
        return {
            name: p.default
            for name, p in inspect.signature(cls.__init__).parameters.items()
            if name not in skip
        }

    dense = params(keras.layers.Dense, {"self"})
    assert params(LowRankDense, {"self", "rank"}) == dense
    conv = params(keras.layers.Conv2D, {"self"})
    assert params(LowRankConv2D, {"self", "rank", "decomposition"}) == conv


# --- SVD initialisation against NumPy -------------------------------------
def _built_dense(units, rank, input_dim):
    layer = LowRankDense(units, rank)
    layer.build((None, input_dim))
    return layer


@pytest.mark.jax
def test_true_rank_matrix_is_reproduced_to_float_precision():
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((48, 6)) @ rng.standard_normal((6, 32))).astype("float32")
    bias = rng.standard_normal(32).astype("float32")
    layer = _built_dense(32, 6, 48)
    layer.set_kernel(w, bias)
    effective = _numpy(layer.kernel)
    np.testing.assert_allclose(effective, w, atol=1e-5 * np.abs(w).max())
    x = rng.standard_normal((5, 48)).astype("float32")
    np.testing.assert_allclose(_numpy(layer(x)), x @ w + bias, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rank", [1, 2, 4, 5])
def test_lower_rank_error_equals_the_svd_tail(rank):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((48, 6)) @ rng.standard_normal((6, 32))
    s = np.linalg.svd(w, compute_uv=False)
    layer = _built_dense(32, rank, 48)
    returned = layer.set_kernel(w)
    measured = np.sum((w - _numpy(layer.kernel).astype(np.float64)) ** 2)
    expected = np.sum(s[rank:] ** 2)
    assert returned == pytest.approx(expected)
    np.testing.assert_allclose(measured, expected, rtol=1e-4)


def _low_rank_kernel(shape, rank, decomposition, seed=0):
    """A conv kernel whose matrix view for ``decomposition`` has true rank ``rank``."""
    kh, kw, cin, f = shape
    rng = np.random.default_rng(seed)
    if decomposition == "channel":
        return (
            rng.standard_normal((kh * kw * cin, rank)) @ rng.standard_normal((rank, f))
        ).reshape(shape)
    m = rng.standard_normal((kh * cin, rank)) @ rng.standard_normal((rank, kw * f))
    return m.reshape(kh, cin, kw, f).transpose(0, 2, 1, 3)


@pytest.mark.parametrize("decomposition", ["channel", "spatial"])
@pytest.mark.parametrize(
    "conv_kwargs",
    [
        {"padding": "same"},
        {"padding": "valid", "strides": (2, 1)},
        {"padding": "same", "strides": 2},
        {"padding": "valid", "dilation_rate": (2, 1)},
    ],
)
def test_conv_at_true_rank_matches_conv2d(decomposition, conv_kwargs):
    shape = (3, 3, 4, 8)
    kernel = _low_rank_kernel(shape, 3, decomposition).astype("float32")
    bias = np.linspace(-1, 1, 8).astype("float32")
    x = np.random.default_rng(2).standard_normal((2, 9, 10, 4)).astype("float32")
    conv = keras.layers.Conv2D(8, 3, activation="relu", **conv_kwargs)
    conv.build(x.shape)
    conv.set_weights([kernel, bias])
    layer = LowRankConv2D(8, 3, 3, decomposition, activation="relu", **conv_kwargs)
    layer.build(x.shape)
    error = layer.set_kernel(kernel, bias)
    assert error < 1e-8 * np.sum(kernel.astype(np.float64) ** 2)
    expected = _numpy(conv(x))
    got = _numpy(layer(x))
    assert got.shape == expected.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("decomposition", ["channel", "spatial"])
def test_conv_error_at_lower_rank_equals_the_svd_tail(decomposition):
    kernel = np.random.default_rng(3).standard_normal((3, 3, 4, 8))
    s = np.linalg.svd(conv_decomposition(decomposition).matrix(kernel), compute_uv=False)
    layer = LowRankConv2D(8, 3, 2, decomposition)
    layer.build((None, 6, 6, 4))
    error = layer.set_kernel(kernel)
    np.testing.assert_allclose(error, np.sum(s[2:] ** 2), rtol=1e-4)
    # The layer computes the convolution with its effective kernel.
    x = np.random.default_rng(4).standard_normal((1, 6, 6, 4)).astype("float32")
    reference = keras.ops.conv(x, layer.effective_kernel().astype("float32"))
    np.testing.assert_allclose(_numpy(layer(x)), _numpy(reference), atol=1e-4)


def test_tucker2_at_full_channel_ranks_matches_conv2d():
    kernel = np.random.default_rng(5).standard_normal((3, 3, 4, 6)).astype("float32")
    x = np.random.default_rng(6).standard_normal((2, 7, 7, 4)).astype("float32")
    layer = LowRankConv2D(6, 3, (4, 6), "tucker2", padding="same", use_bias=False)
    layer.build(x.shape)
    assert layer.set_kernel(kernel) < 1e-8
    expected = keras.ops.conv(x, kernel, padding="same")
    np.testing.assert_allclose(_numpy(layer(x)), _numpy(expected), atol=1e-4)


# --- summary stats --------------------------------------------------------
def test_compression_stats_feed_the_summary():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            LowRankConv2D(16, 3, 4, "channel", padding="same", name="c"),
            LowRankConv2D(16, 3, 4, "spatial", padding="valid", name="s"),
            LowRankConv2D(8, 3, (4, 5), "tucker2", padding="same", name="t"),
            keras.layers.Flatten(),
            LowRankDense(10, 3, name="d"),
        ]
    )
    report = tfc.summary(model, print_fn=None)
    assert report["c"].params == 4 * (27 + 16) + 16
    assert report["c"].macs == 64 * (27 * 4) + 64 * (4 * 16)
    # spatial valid: 3x1 conv -> 6x8 positions, then 1x3 -> 6x6.
    assert report["s"].params == 4 * (3 * 16 + 3 * 16) + 16
    assert report["s"].macs == 48 * (3 * 16 * 4) + 36 * (3 * 4 * 16)
    assert report["t"].params == 16 * 4 + 9 * 4 * 5 + 5 * 8 + 8
    assert report["t"].macs == 36 * (16 * 4 + 9 * 20 + 5 * 8)
    assert report["d"].params == 3 * (288 + 10) + 10
    assert report["d"].macs == 3 * (288 + 10)
    assert report.total_params == model.count_params()


# --- errors -----------------------------------------------------------------
@pytest.mark.parametrize("rank", [0, -3])
def test_rank_below_one(rank):
    with pytest.raises(ValueError, match=f"rank must be >= 1, got {rank}"):
        LowRankDense(4, rank)
    with pytest.raises(ValueError, match=f"rank must be >= 1, got {rank}"):
        LowRankConv2D(4, 3, rank)


def test_rank_at_least_min_in_out_is_refused_at_build():
    layer = LowRankDense(6, 6)
    with pytest.raises(ValueError, match=r"rank=6 must be < min\(in, out\) = min\(10, 6\) = 6"):
        layer.build((None, 10))
    conv = LowRankConv2D(8, 3, 9, "channel")  # matrix (3*3*1, 8): min is 8
    with pytest.raises(ValueError, match=r"rank=9 must be < min\(in, out\) = min\(9, 8\) = 8"):
        conv.build((None, 5, 5, 1))
    with pytest.raises(ValueError, match="Tucker-2 rank_in=5 must be <= 4"):
        LowRankConv2D(8, 3, (5, 2), "tucker2").build((None, 5, 5, 4))


def test_bad_arguments():
    with pytest.raises(ValueError, match="decomposition must be one of"):
        LowRankConv2D(8, 3, 2, decomposition="bogus")
    with pytest.raises(ValueError, match="groups=1 only, got groups=2"):
        LowRankConv2D(8, 3, 2, groups=2)
    with pytest.raises(ValueError, match="does not support lora_rank"):
        LowRankDense(8, 2, lora_rank=4)
    with pytest.raises(TypeError, match="rank must be an int"):
        LowRankDense(8, 2.5)
    layer = _built_dense(8, 2, 5)
    with pytest.raises(ValueError, match=r"kernel must have shape \(5, 8\)"):
        layer.set_kernel(np.zeros((8, 5)))
