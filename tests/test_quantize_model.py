"""quantize_model: digits QAT to full-int8 TFLite, BatchNorm folding, overrides, errors."""

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.models import accuracy, train_classifier

L = tfc.layers
COMPUTE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def compute_ops(report):
    return {k: v for k, v in report.op_counts.items() if k.split("[")[0] in COMPUTE_OPS}


@pytest.mark.slow
def test_digits_cnn_qat_int8_tflite(trained_digits_cnn, digits, tmp_path):
    float_model = trained_digits_cnn
    before = [w.copy() for w in float_model.get_weights()]
    float_acc = accuracy(float_model, digits.x_test, digits.y_test)
    float_report = tfc.tflite_export.export(
        float_model, tmp_path / "float.tflite", verify=False, verbose=0
    )

    qat = tfc.quantize_model(float_model)
    train_classifier(qat, digits, epochs=2, learning_rate=3e-4)
    report = tfc.tflite_export.export(
        qat,
        tmp_path / "qat.tflite",
        quantization="int8",
        verify_data=digits.x_test,
        verify_labels=digits.y_test,
        verbose=0,
    )
    assert compute_ops(report) == {"CONV_2D[int8]": 3, "FULLY_CONNECTED[int8]": 2}
    assert report.top1_agreement >= 0.99
    assert report.tflite_accuracy >= float_acc - 0.01
    assert report.bytes <= 0.3 * float_report.bytes
    # The user's model is untouched.
    for old, new in zip(before, float_model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_quantize_model_keeps_weights_and_places_input_quantizers(trained_digits_cnn, digits):
    qat, log = tfc.quantize_model(trained_digits_cnn, return_log=True)
    names = [name for name, _, _ in log.replaced]
    assert names == ["conv1", "conv2", "conv3", "dense1", "logits"]
    assert qat.get_layer("conv1").input_quantizer is not None
    for name in ("conv2", "conv3", "dense1", "logits"):
        assert qat.get_layer(name).input_quantizer is None, name  # input already int8
    np.testing.assert_array_equal(
        qat.get_layer("conv2").kernel.numpy(), trained_digits_cnn.get_layer("conv2").kernel.numpy()
    )
    x = digits.x_test[:64]
    qat(x, training=True)  # calibrate activation ranges
    agreement = np.mean(
        np.argmax(qat.predict(x, verbose=0), 1)
        == np.argmax(trained_digits_cnn.predict(x, verbose=0), 1)
    )
    assert agreement >= 0.95


def _bn_model():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, use_bias=False, name="dw")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(4, name="head")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    for bn in (model.get_layer("bn"), model.get_layer("bn2")):
        n = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.5, 2, n))
        bn.beta.assign(rng.normal(size=n))
        bn.moving_mean.assign(rng.normal(size=n))
        bn.moving_variance.assign(rng.uniform(0.5, 2, n))
    return model


def test_batch_norm_folding(tmp_path):
    model = _bn_model()
    qat, log = tfc.quantize_model(model, return_log=True)
    assert type(qat.get_layer("bn")).__name__ == "FoldedBatchNorm"
    assert type(qat.get_layer("bn2")).__name__ == "FoldedBatchNorm"
    assert isinstance(qat.get_layer("relu"), L.QuantizeActivation)
    assert not log.skipped
    bn, conv = model.get_layer("bn"), model.get_layer("conv")
    factor = bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    np.testing.assert_allclose(
        qat.get_layer("conv").kernel.numpy(), conv.kernel.numpy() * factor, rtol=1e-5
    )
    np.testing.assert_allclose(
        qat.get_layer("conv").bias.numpy(),
        bn.beta.numpy() + (conv.bias.numpy() - bn.moving_mean.numpy()) * factor,
        rtol=1e-5,
        atol=1e-6,
    )
    x = np.random.default_rng(1).uniform(size=(32, 6, 6, 3)).astype("float32")
    qat(x, training=True)
    expected = model.predict(x, verbose=0)
    got = qat.predict(x, verbose=0)
    assert np.abs(got - expected).max() <= 0.05 * np.abs(expected).max()
    report = tfc.tflite_export.export(
        qat, tmp_path / "bn.tflite", quantization="int8", verify_data=x, verbose=0
    )
    assert compute_ops(report) == {
        "CONV_2D[int8]": 1,
        "DEPTHWISE_CONV_2D[int8]": 1,
        "FULLY_CONNECTED[int8]": 1,
    }
    # .keras round trip of the quantized model.
    path = tmp_path / "qat.keras"
    qat.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), got)


def test_mixed_precision_overrides(trained_digits_cnn):
    config = {
        "weight_bits": 4,
        "overrides": {
            "logits": {"weight_bits": 8},
            "dense1": None,
            "Conv2D": {"kernel_quantizer": "int4_lsq_per_channel"},
        },
    }
    qat, log = tfc.quantize_model(trained_digits_cnn, config, return_log=True)
    assert isinstance(qat.get_layer("conv2").kernel_quantizer, tfc.quantizers.LSQQuantizer)
    assert qat.get_layer("logits").kernel_quantizer.bits == 8
    assert type(qat.get_layer("dense1")) is keras.layers.Dense
    assert ("dense1", "Dense", "kept float by override") in log.skipped
    only = tfc.quantize_model(trained_digits_cnn, "int4", layers=["conv1", keras.layers.Dense])
    assert type(only.get_layer("conv2")) is keras.layers.Conv2D
    assert only.get_layer("conv1").kernel_quantizer.bits == 4
    assert only.get_layer("dense1").kernel_quantizer.axis is None  # per-tensor for Dense


class Scale(keras.layers.Layer):
    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


class Broken(keras.layers.Layer):
    def __init__(self, fn, **kwargs):  # a callable argument: Keras cannot auto-config it
        super().__init__(**kwargs)
        self.fn = fn

    def call(self, x):
        return self.fn(x)


def _custom_model(layer):
    inputs = keras.Input((5,))
    x = keras.layers.Dense(4, name="d1")(inputs)
    x = layer(x)
    y = keras.layers.Add(name="add")([x, keras.layers.Dense(4, name="d2")(inputs)])
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(y))


def test_unsupported_custom_layer_is_listed_or_named_in_error():
    model = _custom_model(Scale(name="my_scale"))
    with pytest.warns(UserWarning, match=r"left 1 layer\(s\) float.*: my_scale \(Scale\)"):
        qat, log = tfc.quantize_model(model, return_log=True)
    skipped = {name: kind for name, kind, _ in log.skipped}
    assert skipped == {"my_scale": "Scale"}
    # The Add gets its own output range, so the next layer needs no input quantizer.
    assert isinstance(qat.get_layer("add"), tfc.layers.QuantizeOutput)
    assert qat.get_layer("out").input_quantizer is None
    assert qat.get_layer("d1").input_quantizer is not None
    with pytest.raises(ValueError, match=r"'my_scale' of type Scale, which quantize_model cannot"):
        tfc.quantize_model(model, layers=["d1", "my_scale"])
    with pytest.raises(ValueError, match=r"layer 'my_broken' \(Broken\) cannot be copied"):
        tfc.quantize_model(_custom_model(Broken(lambda t: t * 3.0, name="my_broken")))


def test_config_errors(trained_digits_cnn):
    with pytest.raises(ValueError, match=r"bits=9 is not supported"):
        tfc.quantize_model(trained_digits_cnn, {"weight_bits": 9})
    with pytest.raises(ValueError, match=r"activation_quantizer='int9_activation'"):
        tfc.quantize_model(trained_digits_cnn, {"activation_quantizer": "int9_activation"})
    with pytest.raises(ValueError, match=r"overrides key 'nope'.*matches no layer"):
        tfc.quantize_model(trained_digits_cnn, {"overrides": {"nope": None}})
    with pytest.raises(ValueError, match=r"unknown keys \['bits'\]"):
        tfc.quantize_model(trained_digits_cnn, {"bits": 4})
    with pytest.raises(ValueError, match=r"layers='missing' matches no layer"):
        tfc.quantize_model(trained_digits_cnn, layers="missing")
