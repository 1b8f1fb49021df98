"""Binary layers, binarize_model, Bop and FlipRatio."""

import inspect

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tests.layer_checks import check_layer
from tfcompress.binary.layers import BinaryConv2D, BinaryDense, BinaryDepthwiseConv2D, WeightClip
from tfcompress.optimizers import Bop
from tfcompress.quantization import binary as Q


@pytest.mark.parametrize(
    "kernel_quantizer",
    [pytest.param("magnitude_aware_sign", marks=pytest.mark.jax), "ste_tern", "ttq"],
)
def test_binary_dense_shared_checks(kernel_quantizer, tmp_path):
    result = check_layer(
        lambda: BinaryDense(6, kernel_quantizer=kernel_quantizer, input_quantizer="ste_sign"),
        (4, 5),
        tmp_path,
    )
    layer = result.model.layers[-1]
    if kernel_quantizer == "ttq":  # asymmetric scales: only the packed form holds them
        restored = tfc.packing.unpack_kernel(layer.packed_kernel())
    else:
        values, scales = layer.binary_kernel()
        restored = values * scales
    np.testing.assert_array_equal(restored, layer.quantized_kernel())


@pytest.mark.parametrize("kernel_quantizer", ["ste_sign"])
def test_binary_conv2d_shared_checks(kernel_quantizer, tmp_path):
    check_layer(
        lambda: BinaryConv2D(
            4, 3, padding="same", kernel_quantizer=kernel_quantizer, input_quantizer="swish_sign"
        ),
        (2, 6, 6, 3),
        tmp_path,
    )


def test_binary_depthwise_shared_checks(tmp_path):
    result = check_layer(
        lambda: BinaryDepthwiseConv2D(
            3, depth_multiplier=2, kernel_quantizer="magnitude_aware_sign", input_quantizer=None
        ),
        (2, 5, 5, 3),
        tmp_path,
    )
    layer = result.model.layers[-1]
    q = layer.quantized_kernel()
    assert q.shape == (3, 3, 1, 6)
    # One scale per (input channel, multiplier) column.
    assert all(len(np.unique(np.abs(q[..., c]))) == 1 for c in range(6))


def test_dorefa_input_quantizer_layer(tmp_path):
    check_layer(
        lambda: BinaryDense(3, input_quantizer=Q.DoReFa(2), kernel_quantizer="ste_sign"),
        (4, 5),
        tmp_path,
        input_data=np.random.default_rng(0).uniform(-0.2, 1.2, (4, 5)).astype("float32"),
    )


@pytest.mark.parametrize(
    ("binary", "keras_cls"),
    [
        (BinaryDense, keras.layers.Dense),
        (BinaryConv2D, keras.layers.Conv2D),
        (BinaryDepthwiseConv2D, keras.layers.DepthwiseConv2D),
    ],
)
def test_signatures_match_keras(binary, keras_cls):
    ours = inspect.signature(binary.__init__).parameters
    for name, param in inspect.signature(keras_cls.__init__).parameters.items():
        assert name in ours, f"{binary.__name__} lacks {name}"
        assert ours[name].default == param.default, name
    assert ours["kernel_quantizer"].default == "ste_sign"


def test_forward_is_binary_and_matches_numpy():
    rng = np.random.default_rng(0)
    layer = BinaryDense(4, use_bias=False)
    x = rng.standard_normal((3, 5)).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x))
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    sign = lambda a: np.where(a >= 0, 1.0, -1.0)  # noqa: E731
    np.testing.assert_allclose(y, sign(x) @ sign(kernel), rtol=1e-6)
    assert set(np.unique(layer.quantized_kernel())) <= {-1.0, 1.0}


@pytest.mark.jax
def test_latent_clip_applied_after_each_step():
    model = keras.Sequential([keras.Input((4,)), BinaryDense(3, latent_clip=0.5)])
    model.compile(optimizer=keras.optimizers.SGD(100.0), loss="mse")
    model.train_on_batch(np.ones((8, 4), "float32"), np.full((8, 3), 5.0, "float32"))
    kernel = keras.ops.convert_to_numpy(model.layers[0].kernel)
    assert np.abs(kernel).max() == pytest.approx(0.5)
    assert model.layers[0].get_config()["kernel_constraint"] is None
    # A user constraint is kept and serialized on its own.
    layer = BinaryDense(3, kernel_constraint=WeightClip(0.25))
    assert layer.get_config()["kernel_constraint"]["config"] == {"clip_value": 0.25}


def test_bad_layer_arguments_name_the_argument():
    with pytest.raises(ValueError, match=r"kernel_quantizer='sgn' is not a known quantizer"):
        BinaryDense(3, kernel_quantizer="sgn")
    with pytest.raises(ValueError, match=r"input_quantizer='nope' is not a known quantizer"):
        BinaryConv2D(3, 3, input_quantizer="nope")
    with pytest.raises(ValueError, match="latent_clip"):
        BinaryDense(3, latent_clip=-1)
    with pytest.raises(ValueError, match=r"threshold must be a number in \(0, 1\), got 1.2"):
        BinaryDense(3, kernel_quantizer=Q.SteTern(threshold=1.2))


def test_compression_stats_and_summary():
    model = keras.Sequential(
        [
            keras.Input((8,)),
            BinaryDense(16, use_bias=False, kernel_quantizer="ste_sign", name="b"),
            BinaryDense(4, kernel_quantizer="ste_tern", name="t"),
            keras.layers.Dense(2, name="f"),
        ]
    )
    report = tfc.summary(model, print_fn=None)
    assert report["b"].bits_per_weight == 1.0 and report["b"].bytes == 8 * 16 / 8
    # Ternary: 2 bits x 64 weights + 4 float32 scales + 4 float32 biases.
    assert report["t"].bits_per_weight == 2.0 and report["t"].bytes == 16 + 16 + 16
    assert report["f"].bits_per_weight == 32.0


def test_shared_stateful_quantizer_gives_each_layer_its_own_scales():
    q = Q.TTQ(threshold=0.1)
    a, b = BinaryDense(3, kernel_quantizer=q), BinaryDense(3, kernel_quantizer=q)
    a.build((None, 4))
    b.build((None, 4))
    # The quantizer is a description; the scales are each layer's own variables.
    scales_a, scales_b = a.quantizer_state["kernel"], b.quantizer_state["kernel"]
    assert scales_a["positive_scale"] is not scales_b["positive_scale"]
    assert len(a.trainable_weights) == 4  # kernel, bias, W_p, W_n
    assert a.trainable_weights[2:] == [scales_a["positive_scale"], scales_a["negative_scale"]]


# ---- binarize_model ----


def test_binarize_model_keeps_first_and_last_and_weights(trained_digits_cnn, digits):
    model = trained_digits_cnn
    binary = tfc.binarize_model(model)
    kinds = {layer.name: type(layer).__name__ for layer in binary.layers}
    assert kinds["conv1"] == "Conv2D" and kinds["logits"] == "Dense"
    assert kinds["conv2"] == "BinaryConv2D" and kinds["dense1"] == "BinaryDense"
    conv2 = binary.get_layer("conv2")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(conv2.kernel),
        np.clip(keras.ops.convert_to_numpy(model.get_layer("conv2").kernel), -1, 1),
    )
    # The user's model is untouched and the copy still classifies well above chance.
    assert type(model.get_layer("conv2")) is keras.layers.Conv2D
    acc = tfc.models.accuracy(binary, digits.x_test, digits.y_test)
    assert acc > 0.5, acc


def test_binarize_model_options_and_errors(trained_digits_cnn):
    model = trained_digits_cnn
    only = tfc.binarize_model(model, layers=["dense1"], kernel_quantizer="ttq")
    assert type(only.get_layer("conv2")) is keras.layers.Conv2D
    dense1 = only.get_layer("dense1")
    assert isinstance(dense1.kernel_quantizer, Q.TTQ)
    positive_scale = dense1.quantizer_state["kernel"]["positive_scale"]
    assert np.all(keras.ops.convert_to_numpy(positive_scale) > 0)
    with pytest.raises(ValueError, match="kernel_quantizer='bogus' is not a known quantizer"):
        tfc.binarize_model(model, kernel_quantizer="bogus")
    with pytest.raises(ValueError, match="leaves no layer"):
        tfc.binarize_model(model, layers=["conv1"])
    with pytest.raises(ValueError, match=r"layers=\['nope'\] matches no layer"):
        tfc.binarize_model(model, layers=["nope"])


# ---- Bop and FlipRatio ----


@pytest.mark.jax
def test_bop_flips_by_momentum_rule_and_uses_fp_optimizer():
    layer = BinaryDense(2, use_bias=True, kernel_quantizer="ste_sign", input_quantizer=None)
    layer.build((None, 3))
    kernel0 = np.array([[0.5, -0.5], [0.5, -0.5], [-0.5, 0.5]], "float32")
    layer.kernel.assign(kernel0)
    grad = np.array([[1.0, 1.0], [-1.0, -1.0], [1e-9, 1e-9]], "float32")
    opt = Bop(threshold=1e-3, gamma=0.5, fp_optimizer=keras.optimizers.SGD(0.1))
    opt.apply([grad, np.ones(2, "float32")], [layer.kernel, layer.bias])
    m = 0.5 * grad
    flip = (np.abs(m) > 1e-3) & ((m >= 0) == (kernel0 >= 0))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer.kernel), np.where(flip, -kernel0, kernel0)
    )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.bias), [-0.1, -0.1])
    assert flip.sum() == 2


def test_bop_trains_and_serializes(tmp_path, digits):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, name="first"),
            keras.layers.BatchNormalization(),
            BinaryDense(64, use_bias=False, name="binary"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(10),
        ]
    )
    flips = tfc.callbacks.FlipRatio(per_layer=True)
    model.compile(
        optimizer=Bop(threshold=1e-6, gamma=1e-2, fp_optimizer=keras.optimizers.Adam(1e-2)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x = digits.x_train.reshape(-1, 64)
    history = model.fit(x, digits.y_train, epochs=3, batch_size=64, verbose=0, callbacks=[flips])
    assert len(flips.history) == 3 and 0 < flips.history[0] < 0.5
    assert history.history["flip_ratio"] == flips.history
    assert "flip_ratio/binary" in history.history
    acc = tfc.models.accuracy(model, digits.x_test.reshape(-1, 64), digits.y_test)
    assert acc > 0.8, acc
    path = tmp_path / "bop.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded.optimizer, Bop)
    assert loaded.optimizer.threshold == 1e-6
    assert isinstance(loaded.optimizer.fp_optimizer, keras.optimizers.Adam)
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_bop_and_flip_ratio_errors():
    with pytest.raises(ValueError, match="threshold"):
        Bop(threshold=0)
    with pytest.raises(ValueError, match="gamma"):
        Bop(gamma=2.0)
    with pytest.raises(ValueError, match="frequency"):
        tfc.callbacks.FlipRatio(frequency=0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="no binary or ternary layers"):
        model.fit(
            np.ones((4, 3)), np.ones((4, 2)), verbose=0, callbacks=[tfc.callbacks.FlipRatio()]
        )
