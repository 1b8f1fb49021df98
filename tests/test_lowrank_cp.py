"""CP decomposition of Conv2D kernels: CP-ALS, the four-convolution chain, factorize_model, TFLite."""

import keras
import numpy as np
import pytest
from layer_checks import check_layer

import tfcompress as tfc
from tfcompress.layers import LowRankConv2D
from tfcompress.lowrank.conv_decompositions import CP, conv_decomposition
from tfcompress.lowrank.cp import cp_als, cp_compose, cp_max_useful_rank, cp_rank_bound


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _cp_kernel(shape, rank, seed=0):
    """A ``(kh, kw, cin, filters)`` kernel of CP rank ``rank`` (random normal factors)."""
    rng = np.random.default_rng(seed)
    factors = [rng.standard_normal((n, rank)) for n in shape]
    return np.einsum("hr,wr,sr,tr->hwst", *factors)


# --- CP-ALS in NumPy ------------------------------------------------------------------
@pytest.mark.jax
@pytest.mark.parametrize(
    "shape, rank",
    [((3, 3, 8, 16), 4), ((3, 3, 4, 8), 5), ((5, 5, 16, 32), 12), ((1, 3, 6, 5), 3)],
)
def test_als_recovers_an_exactly_low_rank_kernel(shape, rank):
    kernel = _cp_kernel(shape, rank)
    result = cp_als(kernel, rank)
    assert result.relative_error < 1e-4
    measured = np.linalg.norm(kernel - cp_compose(result.weights, result.factors))
    assert measured / np.linalg.norm(kernel) == pytest.approx(result.relative_error, abs=1e-12)
    assert result.fit == pytest.approx(1.0, abs=1e-8)
    # Normalised columns, weights in descending order.
    for factor, n in zip(result.factors, shape):
        assert factor.shape == (n, rank)
        np.testing.assert_allclose(np.linalg.norm(factor, axis=0), 1.0, atol=1e-12)
    assert np.all(np.diff(result.weights) <= 0) and np.all(result.weights > 0)


@pytest.mark.jax
def test_als_is_deterministic_and_more_sweeps_do_not_hurt():
    kernel = np.random.default_rng(1).standard_normal((3, 3, 6, 10))
    a, b = cp_als(kernel, 7), cp_als(kernel, 7)
    np.testing.assert_array_equal(a.weights, b.weights)
    for fa, fb in zip(a.factors, b.factors):
        np.testing.assert_array_equal(fa, fb)
    errors = [cp_als(kernel, 7, max_iter=n, tol=0).relative_error for n in (1, 5, 50)]
    assert errors[0] >= errors[1] - 1e-12 >= errors[2] - 2e-12
    assert 0 < errors[2] < 1  # a random kernel is not of CP rank 7
    zero = cp_als(np.zeros((3, 3, 2, 2)), 2)
    assert zero.relative_error == 0 and np.all(zero.weights == 0)


@pytest.mark.jax
def test_rank_bounds():
    assert cp_rank_bound((3, 3, 8, 16)) == 3 * 3 * 8  # prod / max
    assert cp_rank_bound((1, 1, 5, 7)) == 5  # a 1x1 kernel is a matrix
    # R (kh + kw + cin + filters) < kh kw cin filters: 1152 / 30 -> 38.
    assert cp_max_useful_rank((3, 3, 8, 16)) == 38
    assert 38 * 30 < 1152 <= 39 * 30


@pytest.mark.jax
def test_cp_object_composes_its_factors_and_counts_them():
    shape, rank = (3, 3, 5, 7), 6
    kernel = np.random.default_rng(2).standard_normal(shape)
    scheme = conv_decomposition("cp")
    assert isinstance(scheme, CP) and scheme.name == "cp" and not scheme.svd_based
    factors = scheme.factors(kernel, rank)
    stages = scheme.stages(shape, rank, strides=(2, 1), dilation=(1, 1))
    assert [f.shape for f in factors] == [s.shape for s in stages]
    assert [f.shape for f in factors] == [(1, 1, 5, 6), (3, 1, 6, 1), (1, 3, 6, 1), (1, 1, 6, 7)]
    assert [s.depthwise for s in stages] == [False, True, True, False]
    assert [s.filters for s in stages] == [6, 6, 6, 7]
    assert [s.strides for s in stages] == [(1, 1), (2, 1), (1, 1), (1, 1)]
    # compose is the CP sum, checked against einsum over the raw factors.
    ks, kx, ky, kt = factors
    expected = np.einsum("hr,wr,sr,tr->hwst", kx[:, 0, :, 0], ky[0, :, :, 0], ks[0, 0], kt[0, 0].T)
    np.testing.assert_allclose(scheme.compose(factors), expected, atol=1e-12)
    result = scheme.decompose(kernel, rank)
    np.testing.assert_allclose(
        scheme.compose(factors), cp_compose(result.weights, result.factors), atol=1e-10
    )
    # The CP weights are split evenly: every stage's column r has norm lambda_r^(1/4).
    for columns in (ks[0, 0], kx[:, 0, :, 0], ky[0, :, :, 0], kt[0, 0].T):
        np.testing.assert_allclose(
            np.linalg.norm(columns, axis=0), result.weights**0.25, rtol=1e-10
        )
    assert scheme.params(shape, rank) == rank * (5 + 3 + 3 + 7) == 108
    assert scheme.params((5, 3, 64, 128), 40) == 40 * (64 + 5 + 3 + 128)


@pytest.mark.jax
def test_choose_rank_by_energy_and_clipping():
    scheme = conv_decomposition("cp")
    kernel = _cp_kernel((3, 3, 6, 8), 5)
    # energy is the ALS fit 1 - ||K - K_R||^2 / ||K||^2; rank 5 fits exactly.
    assert scheme.choose_rank(kernel, None, 0.9999) == 5
    assert scheme.decompose(kernel, 4).fit < 0.9999
    assert scheme.choose_rank(kernel, 10_000, None) == cp_rank_bound(kernel.shape) == 54
    # Energy that no useful rank reaches: one past the useful ranks (factorize_model skips it).
    noise = np.random.default_rng(3).standard_normal((3, 3, 2, 2))
    assert scheme.choose_rank(noise, None, 1.0) == cp_max_useful_rank(noise.shape) + 1 == 4
    with pytest.raises(ValueError, match=r"energy must be in \(0, 1\]"):
        scheme.choose_rank(kernel, None, 1.5)


# --- the chain of four convolutions ----------------------------------------------------
@pytest.mark.jax
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("conv_kwargs", [{}, {"strides": 2}, {"strides": (2, 1)}, {"dilation_rate": (1, 2)}])  # fmt: skip
def test_chain_equals_conv2d_with_the_composed_kernel(padding, conv_kwargs):
    x = np.random.default_rng(4).standard_normal((2, 9, 10, 4)).astype("float32")
    layer = LowRankConv2D(8, 3, 5, "cp", padding=padding, activation="relu", **conv_kwargs)
    layer.build(x.shape)
    layer.bias.assign(np.linspace(-1, 1, 8).astype("float32"))
    conv = keras.layers.Conv2D(8, 3, padding=padding, activation="relu", **conv_kwargs)
    conv.build(x.shape)
    conv.set_weights([layer.effective_kernel().astype("float32"), _numpy(layer.bias)])
    expected, got = _numpy(conv(x)), _numpy(layer(x))
    assert got.shape == expected.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.jax
def test_exact_cp_rank_kernel_gives_the_conv2d_outputs():
    kernel = (_cp_kernel((3, 3, 4, 8), 4, seed=5) / 4).astype("float32")
    bias = np.linspace(-1, 1, 8).astype("float32")
    x = np.random.default_rng(6).standard_normal((2, 9, 9, 4)).astype("float32")
    layer = LowRankConv2D(8, 3, 4, "cp", padding="same")
    layer.build(x.shape)
    error = layer.set_kernel(kernel, bias)
    assert error < 1e-8 * np.sum(kernel.astype(np.float64) ** 2)
    expected = keras.ops.conv(x, kernel, padding="same") + bias
    np.testing.assert_allclose(_numpy(layer(x)), _numpy(expected), atol=1e-4)


@pytest.mark.jax
@pytest.mark.parametrize(
    "kwargs", [{"padding": "same", "activation": "relu"}, {"strides": 2, "use_bias": False}]
)
def test_layer_checks(tmp_path, kwargs):
    check_layer(
        lambda: LowRankConv2D(6, 3, rank=4, decomposition="cp", **kwargs),
        (2, 7, 7, 3),
        tmp_path,
        atol=1e-5,
    )


def test_params_and_macs_in_the_summary():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            LowRankConv2D(16, 3, 4, "cp", padding="same", name="same"),
            LowRankConv2D(8, (3, 5), 6, "cp", strides=2, name="valid"),
        ]
    )
    report = tfc.summary(model, print_fn=None)
    assert report["same"].params == 4 * (3 + 3 + 3 + 16) + 16 == 116
    assert report["same"].macs == 64 * 4 * (3 + 3 + 3 + 16)
    # valid, strides 2: 1x1 on 8x8, 3x1 (stride 2) -> 3x8, 1x5 (stride 2) -> 3x2, 1x1 on 3x2.
    assert report["valid"].params == 6 * (16 + 3 + 5 + 8) + 8
    assert report["valid"].macs == 64 * 16 * 6 + 24 * 3 * 6 + 6 * 5 * 6 + 6 * 6 * 8
    assert report.total_params == model.count_params()


# --- factorize_model, expand_lowrank, TFLite -----------------------------------------
@pytest.fixture(scope="module")
def trained(digits):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c2"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(10, name="out"),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits.x_train, digits.y_train, epochs=5, batch_size=64, verbose=0)
    return model


def test_factorize_model_with_cp_keeps_outputs_close(trained, digits):
    x = digits.x_test
    before = [_numpy(w).copy() for w in trained.weights]
    reference = _numpy(trained(x))
    kernel = _numpy(trained.get_layer("c2").kernel).astype(np.float64)

    def factorize(rank):
        small, report = tfc.factorize_model(
            trained, rank=rank, layers=["c2"], conv_decomposition="cp", return_report=True,
            verbose=0,
        )  # fmt: skip
        out = _numpy(small(x))
        return small, report, np.linalg.norm(out - reference) / np.linalg.norm(reference), out

    small, report, error, out = factorize(32)
    layer = small.get_layer("c2")
    assert isinstance(layer, LowRankConv2D) and layer.decomposition == "cp" and layer.rank == 32
    (entry,) = report.factorized
    assert entry.params_before == 1152 and entry.params_after == 32 * (8 + 3 + 3 + 16) == 960
    assert report.params_after == small.count_params() == trained.count_params() - 1152 + 960
    kernel_error = np.linalg.norm(kernel - layer.effective_kernel()) / np.linalg.norm(kernel)
    assert entry.relative_error == pytest.approx(kernel_error, rel=1e-4)
    assert kernel_error < 0.3 and error < 0.05
    assert np.mean(out.argmax(1) == reference.argmax(1)) >= 0.98
    # A low rank is much worse; the user's model is untouched.
    assert factorize(8)[2] > 2 * error
    for old, new in zip(before, trained.weights):
        np.testing.assert_array_equal(old, _numpy(new))
    # energy: the ALS fit of every factorized kernel reaches it.
    _, report = tfc.factorize_model(
        trained, energy=0.95, layers=keras.layers.Conv2D, conv_decomposition="cp",
        return_report=True, verbose=0,
    )  # fmt: skip
    assert [f.name for f in report.factorized] == ["c2"]
    assert report.factorized[0].relative_error <= np.sqrt(0.05) + 1e-9
    assert [name for name, _, _ in report.skipped] == ["c1"]  # no useful CP rank reaches 0.95


def test_expand_lowrank_and_tflite_export_use_depthwise_convs(trained, digits, tmp_path):
    from tfcompress.export.tflite import export

    small = tfc.factorize_model(trained, rank=32, layers=["c2"], conv_decomposition="cp", verbose=0)
    expanded = tfc.transforms.expand_lowrank(small)
    chain = expanded.get_layer("c2")
    assert [type(x).__name__ for x in chain.layers] == [
        "Conv2D", "DepthwiseConv2D", "DepthwiseConv2D", "Conv2D",
    ]  # fmt: skip
    assert expanded.count_params() == small.count_params()
    x = digits.x_test[:64]
    np.testing.assert_allclose(_numpy(expanded(x)), _numpy(small(x)), atol=1e-5)

    report = export(small, str(tmp_path / "cp.tflite"), verify_data=x, verbose=0)
    assert report.verified and report.max_abs_diff < 1e-4
    assert report.op_counts["DEPTHWISE_CONV_2D[float32]"] == 2
    assert report.op_counts["CONV_2D[float32]"] == 3  # c1 and the two 1x1 of c2


# --- errors, raised before anything changes --------------------------------------------
@pytest.mark.parametrize("rank", [0, -2])
def test_rank_below_one_is_refused(rank, trained):
    with pytest.raises(ValueError, match=f"rank must be >= 1, got {rank}"):
        LowRankConv2D(8, 3, rank, "cp")
    before = [_numpy(w).copy() for w in trained.weights]
    with pytest.raises(ValueError, match=f"rank must be >= 1, got rank={rank}"):
        tfc.factorize_model(trained, rank=rank, conv_decomposition="cp", verbose=0)
    with pytest.raises(ValueError, match=f"rank must be >= 1, got c2={rank}"):
        tfc.factorize_model(trained, rank={"c2": rank}, conv_decomposition="cp", verbose=0)
    for old, new in zip(before, trained.weights):
        np.testing.assert_array_equal(old, _numpy(new))


def test_other_bad_ranks(trained):
    with pytest.raises(TypeError, match=r"rank must be an int >= 1, got \(2, 3\)"):
        LowRankConv2D(8, 3, (2, 3), "cp")
    layer = LowRankConv2D(8, 3, 73, "cp")
    with pytest.raises(ValueError, match=r"CP rank=73 must be <= .* = 72 for a \(3, 3, 8, 8\)"):
        layer.build((None, 6, 6, 8))
    assert not layer.built
    with pytest.raises(ValueError, match=r"target_ratio needs an SVD-based .* got 'cp'"):
        tfc.factorize_model(trained, target_ratio=0.5, conv_decomposition="cp", verbose=0)
