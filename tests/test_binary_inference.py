"""Packed XNOR-popcount inference of BinaryDense / BinaryConv2D (freeze), on both op paths.

Tolerance: unscaled binary kernels (ste_sign) give bit-identical outputs (integer dot products,
exact in float32); scaled kernels (magnitude_aware_sign) differ only by the float32 rounding of
the per-channel scale multiply (packed: dot * alpha; default: sum of +-alpha), checked with
rtol=atol=1e-5 on outputs of magnitude ~10-100.
"""

import keras
import numpy as np
import pytest

from tfcompress.binary import packed as binary_packed
from tfcompress.kernels import tf as kernels_tf
from tfcompress.layers import (
    BinaryConv2D,
    BinaryDense,
    freeze_binary,
    unfreeze_binary,
)
from tfcompress.models import digits_binary_cnn

RNG = np.random.default_rng(7)
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("kernel_quantizer", ["ste_sign", "magnitude_aware_sign"])
def test_dense_frozen_equals_default(kernel_path, kernel_quantizer):
    layer = BinaryDense(
        37, activation="tanh", bias_initializer="random_normal", kernel_quantizer=kernel_quantizer
    )
    x = RNG.standard_normal((5, 3, 45)).astype("float32")  # leading batch dims too
    expected = _np(layer(x))
    assert layer.freeze() and layer.inference_path == "packed"
    got = _np(layer(x))
    if kernel_quantizer == "ste_sign":
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, **TOL)
    layer.unfreeze()
    np.testing.assert_array_equal(_np(layer(x)), expected)


@pytest.mark.parametrize(
    ("strides", "padding", "dilation"),
    [(1, "same", 1), (2, "same", 1), (2, "valid", 1), ((1, 2), "same", 1), (1, "valid", 2)],
)
def test_conv_frozen_equals_default(kernel_path, strides, padding, dilation):
    layer = BinaryConv2D(
        6,
        3,
        strides=strides,
        padding=padding,
        dilation_rate=dilation,
        bias_initializer="random_normal",
        kernel_quantizer="magnitude_aware_sign",
    )
    x = RNG.standard_normal((2, 9, 10, 37)).astype("float32")  # 37 channels: not word-aligned
    expected = _np(layer(x))
    assert layer.freeze()
    np.testing.assert_allclose(_np(layer(x)), expected, **TOL)


def test_frozen_digits_cnn_predicts_the_same(kernel_path, monkeypatch):
    model = digits_binary_cnn()
    for bn in [
        layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]:
        bn.moving_mean.assign(RNG.normal(0, 0.5, bn.moving_mean.shape))
    x = RNG.uniform(0, 1, (33, 8, 8, 1)).astype("float32")
    expected = model.predict(x, verbose=0)  # also caches Keras' predict function

    calls = []
    monkeypatch.setattr(
        kernels_tf, "binary_conv2d_inference", _spy(kernels_tf.binary_conv2d_inference, calls)
    )
    assert freeze_binary(model) == {"conv2": "packed", "conv3": "packed", "dense1": "packed"}
    got = model.predict(x, verbose=0)
    assert calls, "predict after freeze_binary did not run the packed conv"
    np.testing.assert_allclose(got, expected, **TOL)
    np.testing.assert_array_equal(got.argmax(-1), expected.argmax(-1))
    unfreeze_binary(model)
    assert model.get_layer("conv2").inference_path == "default"
    np.testing.assert_allclose(_np(model(x)), expected, **TOL)  # eager vs predict batching


def test_frozen_model_saves_and_loads_frozen(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            # Unscaled conv: its integer outputs are exact on both paths, so the sign that
            # BinaryDense takes never differs (a scaled kernel's float sum of +-alpha can give
            # +-1e-8 where the packed dot product is exactly 0; see docs/binary.md).
            BinaryConv2D(8, 3, padding="same", kernel_quantizer="ste_sign"),
            keras.layers.Flatten(),
            BinaryDense(4, kernel_quantizer="magnitude_aware_sign"),
        ]
    )
    x = RNG.standard_normal((5, 6, 6, 3)).astype("float32")
    expected = _np(model(x))
    freeze_binary(model)
    got = _np(model(x))
    np.testing.assert_allclose(got, expected, **TOL)
    file = tmp_path / "frozen.keras"
    model.save(file)
    loaded = keras.saving.load_model(file, safe_mode=True)
    assert [getattr(layer, "inference_path", None) for layer in loaded.layers] == [
        "packed",
        None,
        "packed",
    ]
    np.testing.assert_array_equal(_np(loaded(x)), got)


def _spy(fn, calls):
    def wrapped(*args, **kwargs):
        calls.append(1)
        return fn(*args, **kwargs)

    return wrapped


def test_layers_without_binary_inputs_or_kernels_keep_their_path():
    x = RNG.standard_normal((4, 20)).astype("float32")
    cases = {
        "input_quantizer": BinaryDense(8, input_quantizer=None),
        "kernel_quantizer": BinaryDense(8, kernel_quantizer="ste_tern"),
        "groups": BinaryConv2D(4, 1, groups=2),
    }
    for reason, layer in cases.items():
        inputs = x if isinstance(layer, BinaryDense) else x.reshape(4, 1, 5, 4)
        expected = _np(layer(inputs))
        assert layer.freeze() is False and layer.frozen
        assert reason in layer.packed_unsupported_reason
        np.testing.assert_array_equal(_np(layer(inputs)), expected)


def test_frozen_weights_follow_set_weights_and_training_is_refused():
    layer = BinaryDense(5, use_bias=False, kernel_quantizer="ste_sign")
    x = RNG.standard_normal((3, 40)).astype("float32")
    layer.build(x.shape)
    layer.freeze()
    new_kernel = RNG.standard_normal((40, 5)).astype("float32")
    layer.set_weights([new_kernel])
    sign = lambda a: np.where(a >= 0, 1.0, -1.0)  # noqa: E731
    np.testing.assert_array_equal(_np(layer(x)), sign(x) @ sign(new_kernel))

    model = keras.Sequential([keras.Input((40,)), layer])
    model.compile("sgd", "mse")
    with pytest.raises(RuntimeError, match=r"frozen for packed inference.*unfreeze"):
        model.fit(x, np.zeros((3, 5)), verbose=0)
    unfreeze_binary(model)
    model.fit(x, np.zeros((3, 5)), verbose=0)


def test_freeze_errors(monkeypatch):
    with pytest.raises(
        ValueError, match="inference must be one of 'default', 'packed', got 'xnor'"
    ):
        BinaryDense(4, inference="xnor")
    with pytest.raises(ValueError, match="no BinaryDense or BinaryConv2D"):
        freeze_binary(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match="built"):
        freeze_binary(keras.Sequential([BinaryDense(2)]))
    monkeypatch.setattr(binary_packed, "require_tensorflow_backend", _refuse)
    layer = BinaryDense(4)
    with pytest.raises(RuntimeError, match="TensorFlow backend"):
        layer.freeze()
    assert not layer.frozen  # nothing changed
    with pytest.raises(RuntimeError, match="TensorFlow backend"):
        BinaryDense(4, inference="packed")


def _refuse(feature):
    raise RuntimeError(f"{feature} needs the TensorFlow backend (test)")
