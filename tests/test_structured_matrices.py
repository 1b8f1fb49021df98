"""CirculantDense / ToeplitzDense: NumPy references, projections, structure_model, export."""

import inspect

import keras
import numpy as np
import pytest
from layer_checks import check_layer

from tfcompress.structured import circulant
from tfcompress.structured.circulant import CirculantDense, irfft_via_rfft
from tfcompress.structured.convert import densify, structure_model
from tfcompress.structured.toeplitz import ToeplitzDense

CLASSES = [CirculantDense, ToeplitzDense]
PRODUCTS = ["fft", "conv", "dense"]


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _entry(cls, params, r, s):
    """One block entry, straight from the definitions in the docstrings."""
    b = params.shape[-1] if cls is CirculantDense else (params.shape[-1] + 1) // 2
    return params[(r - s) % b] if cls is CirculantDense else params[r - s + b - 1]


def _full_matrix(cls, params):
    """The ``(units, in)`` matrix ``A`` built entry by entry: the NumPy reference."""
    out_blocks, in_blocks, _ = params.shape
    b = params.shape[-1] if cls is CirculantDense else (params.shape[-1] + 1) // 2
    a = np.zeros((out_blocks * b, in_blocks * b))
    for i in range(out_blocks):
        for j in range(in_blocks):
            for r in range(b):
                for s in range(b):
                    a[i * b + r, j * b + s] = _entry(cls, params[i, j], r, s)
    return a


def _built(cls, units, block_size, input_dim, **kwargs):
    layer = cls(units, block_size, **kwargs)
    layer.build((None, input_dim))
    return layer


# --- shared checks --------------------------------------------------------
@pytest.mark.jax
@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("product", ["auto", "fft", "dense"])
def test_layer_checks(tmp_path, cls, product):
    check_layer(lambda: cls(8, 4, activation="relu", product=product), (3, 12), tmp_path, atol=1e-5)


@pytest.mark.jax
@pytest.mark.parametrize("cls", CLASSES)
def test_layer_checks_on_3d_inputs_without_bias(tmp_path, cls):
    check_layer(lambda: cls(6, 3, use_bias=False), (2, 3, 9), tmp_path, atol=1e-5)


@pytest.mark.parametrize("product", ["auto", "fft"])
def test_mixed_float16(tmp_path, product):
    # The FFT runs in float32 (TF's RFFT has no float16 kernel); outputs are float16.
    check_layer(
        lambda: CirculantDense(8, 4, product=product),
        (3, 12),
        tmp_path,
        atol=1e-2,
        dtype_policy="mixed_float16",
    )


def test_signature_extends_dense_and_config_has_every_argument():
    dense = inspect.signature(keras.layers.Dense.__init__).parameters
    for cls in CLASSES:
        ours = inspect.signature(cls.__init__).parameters
        extra = {"block_size", "product"}
        shared = [n for n in ours if n not in extra | {"self", "kwargs"}]
        assert all(ours[n].default == dense[n].default for n in shared if n in dense)
        config = _built(cls, 4, 2, 6).get_config()
        assert set(shared) | extra <= set(config)


# --- outputs against the explicit NumPy matrix -------------------------------
@pytest.mark.jax
@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("product", PRODUCTS)
@pytest.mark.parametrize(
    "block_size, channels, phases", [(1, 16, 1), (4, 16, 1), (8, 16, 2), (12, 4, 2), (12, 6, 3)]
)
def test_products_match_the_explicit_block_matrix(
    monkeypatch, cls, product, block_size, channels, phases
):
    # CONV_CHANNELS sets the polyphase split q: these cases cover q = 1, 2, 3.
    monkeypatch.setattr(circulant, "CONV_CHANNELS", channels)
    b = block_size
    layer = _built(cls, 2 * b, b, 3 * b, product=product)
    assert layer.conv_phases == phases
    rng = np.random.default_rng(b)
    bias = rng.standard_normal(2 * b).astype("float32")
    layer.bias.assign(bias)
    x = rng.standard_normal((2, 5, 3 * b)).astype("float32")
    a = _full_matrix(cls, _numpy(layer.structured_weight).astype(np.float64))
    expected = x.astype(np.float64) @ a.T + bias
    np.testing.assert_allclose(_numpy(layer(x)), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_numpy(layer.kernel), a.T, atol=1e-7)


@pytest.mark.jax
@pytest.mark.parametrize("cls", CLASSES)
def test_products_have_equal_gradients(cls):
    x = np.random.default_rng(0).standard_normal((4, 16)).astype("float32")
    grads = []
    for product in PRODUCTS:
        keras.utils.set_random_seed(3)
        model = keras.Sequential([keras.Input((16,)), cls(8, 4, product=product)])
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
        before = _numpy(model.layers[0].structured_weight)
        model.train_on_batch(x, np.ones((4, 8), "float32"))
        grads.append(before - _numpy(model.layers[0].structured_weight))
    for other in grads[1:]:
        np.testing.assert_allclose(other, grads[0], atol=1e-5)


@pytest.mark.jax
@pytest.mark.parametrize("length", [1, 2, 5, 8, 9])
def test_irfft_via_rfft_matches_numpy(length):
    y = np.random.default_rng(length).standard_normal((3, length)).astype("float32")
    spectrum = np.fft.rfft(y)
    got = irfft_via_rfft(spectrum.real.astype("float32"), spectrum.imag.astype("float32"), length)
    np.testing.assert_allclose(_numpy(got), y, atol=1e-5)


def test_auto_is_conv_and_block_size_one_is_dense():
    assert _built(CirculantDense, 8, 4, 8).resolved_product == "conv"
    assert _built(ToeplitzDense, 8, 4, 8, product="fft").resolved_product == "fft"
    assert _built(CirculantDense, 8, 1, 8, product="fft").resolved_product == "dense"


# --- parameters and initialisation ------------------------------------------
@pytest.mark.parametrize(
    "cls, expected_kernel",
    [(CirculantDense, 24 * 16 // 4), (ToeplitzDense, 7 * (24 // 4) * (16 // 4))],
)
def test_parameter_counts(cls, expected_kernel):
    model = keras.Sequential([keras.Input((24,)), cls(16, 4)])
    layer = model.layers[0]
    assert tuple(layer.structured_weight.shape) == (4, 6, cls.params_per_block(4))
    assert model.count_params() == expected_kernel + 16
    assert layer.compression_stats() == {"params": expected_kernel + 16}


@pytest.mark.jax
@pytest.mark.parametrize("cls", CLASSES)
def test_glorot_initialisation_has_the_dense_kernels_variance(cls):
    layer = _built(cls, 512, 16, 256, kernel_initializer=keras.initializers.GlorotNormal(seed=1))
    std = np.std(_numpy(layer.structured_weight))
    # truncated normal: stddev sqrt(2 / (n + m)) / 0.8796
    assert std == pytest.approx(np.sqrt(2 / (256 + 512)), rel=0.05)


# --- least-squares projection ------------------------------------------------
@pytest.mark.jax
@pytest.mark.parametrize("cls", CLASSES)
def test_set_kernel_is_the_mean_along_each_diagonal(cls):
    b, n, m = 4, 8, 12
    w = np.random.default_rng(0).standard_normal((n, m))
    layer = _built(cls, m, b, n)
    error = layer.set_kernel(w, bias=np.arange(m, dtype="float32"))
    params = _numpy(layer.structured_weight)
    a = w.T
    for i in range(m // b):
        for j in range(n // b):
            for k in range(cls.params_per_block(b)):
                members = [
                    a[i * b + r, j * b + s]
                    for r in range(b)
                    for s in range(b)
                    if cls.block_index(b)[r, s] == k
                ]
                assert params[i, j, k] == pytest.approx(np.mean(members), abs=1e-6)
    structured = _full_matrix(cls, params.astype(np.float64)).T
    assert error == pytest.approx(np.sum((w - structured) ** 2), rel=1e-5)
    # Least squares: the residual is orthogonal to every structured matrix.
    other = _full_matrix(cls, np.random.default_rng(1).standard_normal(params.shape)).T
    assert abs(np.sum((w - structured) * other)) < 1e-4
    np.testing.assert_array_equal(_numpy(layer.bias), np.arange(m))


@pytest.mark.parametrize("cls", CLASSES)
def test_to_dense_is_exact(cls):
    layer = _built(cls, 8, 4, 12, activation="tanh")
    x = np.random.default_rng(0).standard_normal((3, 12)).astype("float32")
    dense = layer.to_dense()
    assert type(dense) is keras.layers.Dense and dense.name == layer.name
    np.testing.assert_allclose(_numpy(dense(x)), _numpy(layer(x)), atol=1e-5)


# --- errors -------------------------------------------------------------------
@pytest.mark.jax
@pytest.mark.parametrize("cls", CLASSES)
def test_errors_name_the_argument_and_value(cls):
    name = cls.__name__
    with pytest.raises(ValueError, match=rf"{name}: block_size=3 must divide units=8"):
        cls(8, 3)
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match=rf"block_size must be a positive int, got {bad}"):
            cls(8, bad)
    with pytest.raises(ValueError, match=r"units must be a positive int, got 0"):
        cls(0, 2)
    with pytest.raises(ValueError, match=r"product must be one of .*, got 'fast'"):
        cls(8, 2, product="fast")
    layer = cls(8, 4)
    with pytest.raises(ValueError, match=r"block_size=4 must divide the input dimension 10"):
        layer.build((None, 10))
    assert not layer.weights and not layer.built


# --- structure_model / densify ----------------------------------------------
def _trained_like_model():
    """Dense + 1x1 Conv2D with random 'trained' weights, and layers it must skip."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3, 3, 8))
    x = keras.layers.Conv2D(12, 1, activation="relu", name="pointwise")(inputs)
    x = keras.layers.Conv2D(4, 3, name="spatial")(x)  # 3x3: not a Dense over channels
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(6, name="head")(x)  # 6 is not a multiple of 4
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(rng.standard_normal(w.shape).astype("float32"))
    return model


@pytest.mark.parametrize("kind, cls", [("circulant", CirculantDense), ("toeplitz", ToeplitzDense)])
def test_structure_model_projects_kernels_and_keeps_the_rest(kind, cls):
    model = _trained_like_model()
    before = [_numpy(w).copy() for w in model.weights]
    new, report = structure_model(model, kind, block_size=4, return_report=True, verbose=0)
    for w, copy in zip(model.weights, before):  # the original is untouched
        np.testing.assert_array_equal(_numpy(w), copy)
    assert {s.name for s in report.structured} == {"pointwise", "hidden"}
    assert {name for name, _, _ in report.skipped} == {"spatial", "head"}
    for name in ("pointwise", "hidden"):
        old, replaced = model.get_layer(name), new.get_layer(name)
        assert type(replaced) is cls and replaced.activation is keras.activations.relu
        kernel = _numpy(old.kernel).reshape(-1, _numpy(old.kernel).shape[-1])
        expected = cls.project(kernel, 4)
        np.testing.assert_allclose(_numpy(replaced.structured_weight), expected, atol=1e-6)
        np.testing.assert_array_equal(_numpy(replaced.bias), _numpy(old.bias))
    for name in ("spatial", "head"):
        for a, b in zip(model.get_layer(name).weights, new.get_layer(name).weights):
            np.testing.assert_array_equal(_numpy(a), _numpy(b))
    assert report.params_after == new.count_params() < report.params_before
    assert "head (Dense): block_size=4 does not divide" in report.to_string()

    # densify gives the Dense equivalent, with the same outputs.
    x = np.random.default_rng(1).standard_normal((2, 3, 3, 8)).astype("float32")
    dense = densify(new)
    assert type(dense.get_layer("pointwise")) is keras.layers.Dense
    np.testing.assert_allclose(_numpy(dense(x)), _numpy(new(x)), rtol=1e-5, atol=1e-4)


def test_structure_model_errors_before_anything_changes():
    model = _trained_like_model()
    with pytest.raises(ValueError, match=r"cannot structure layer 'head': block_size=4 does"):
        structure_model(model, block_size=4, layers=["hidden", "head"], verbose=0)
    with pytest.raises(TypeError, match=r"cannot structure layer 'spatial'.*1x1 Conv2D"):
        structure_model(model, block_size=4, layers="spatial", verbose=0)
    with pytest.raises(ValueError, match=r"kind must be one of \('circulant', 'toeplitz'\)"):
        structure_model(model, kind="hankel", verbose=0)
    with pytest.raises(ValueError, match=r"block_size must be a positive int, got 0"):
        structure_model(model, block_size=0, verbose=0)
    with pytest.raises(ValueError, match=r"product must be one of .*, got 'fast'"):
        structure_model(model, block_size=4, product="fast", verbose=0)
    with pytest.raises(ValueError, match=r"found no layer to replace"):
        structure_model(model, block_size=5, verbose=0)
    with pytest.raises(ValueError, match="has no structured layer"):
        densify(model)


# --- TFLite export ------------------------------------------------------------
@pytest.mark.parametrize("product", ["auto", "fft", "dense"])
def test_export_uses_builtin_ops_and_agrees_with_keras(tmp_path, product):
    from tfcompress.export.tflite import export

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            CirculantDense(64, 16, activation="relu", product=product),
            ToeplitzDense(32, 8, product=product),
        ]
    )
    report = export(model, tmp_path / "structured.tflite", verbose=0)
    assert report.verified and report.max_abs_diff < 1e-5
    ops = {name.split("[")[0] for name in report.op_counts}
    assert not any("CUSTOM" in op or "FLEX" in op.upper() for op in ops), ops
    expected = {"auto": "CONV_2D", "fft": "RFFT2D", "dense": "FULLY_CONNECTED"}[product]
    assert expected in ops
    if product == "auto":  # the kernel is not expanded: fewer weights in the file
        dense = export(densify(model), tmp_path / "dense.tflite", verify=False, verbose=0)
        assert report.bytes < 0.6 * dense.bytes


@pytest.mark.parametrize(
    ("layer", "per_row"),
    [
        (lambda: CirculantDense(32, block_size=8, product="dense"), 32 * 16),
        (lambda: CirculantDense(32, block_size=8, product="conv"), 32 * 16),
        (lambda: ToeplitzDense(32, block_size=8, product="dense"), 32 * 16),
    ],
)
def test_summary_counts_structured_macs_at_every_position(layer, per_row):
    import tfcompress as tfc

    inputs = keras.Input((5, 7, 16))
    model = keras.Model(inputs, layer()(inputs))
    row = tfc.summary(model).layers[-1]
    assert model.layers[-1].macs_per_row() == per_row
    assert row.macs == per_row * 5 * 7


def test_toeplitz_conv_macs_count_both_directions():
    layer = ToeplitzDense(32, block_size=8, product="conv")
    layer.build((None, 16))
    q = layer.conv_phases
    assert layer.macs_per_row() == (2 * 8 // q - 1) * q * 32 * 16 // 8
    assert 32 * 16 < layer.macs_per_row() < 2 * 32 * 16
