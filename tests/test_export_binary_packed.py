"""quantization="binary": 1-bit packed kernels in a stock-LiteRT file (tfcompress.export.binary_packed)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

import tfcompress as tfc
from tfcompress.export import binary_graph, binary_packed
from tfcompress.export.binary_packed import convert_binary, plan_binary_export
from tfcompress.export.converter import convert
from tfcompress.export.interpreter import TFLiteModel
from tfcompress.export.tflite import export
from tfcompress.models import digits_binary_cnn, train_classifier

L = tfc.layers
SIGN = {"input_quantizer": "ste_sign", "use_bias": False}


def _randomize_batchnorm(model, seed=0):
    """Moving statistics away from (0, 1): a binary pre-activation of exactly 0 must not
    map to a BatchNorm output of 0, whose sign float rounding would decide."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, n),
                    rng.normal(0, 0.5, n),
                    rng.normal(0, 1, n),
                    rng.uniform(0.5, 2, n),
                ]
            )


def _tiny_model():
    """Float conv -> binary conv (scaled) -> binary depthwise (unscaled) -> binary dense -> logits."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            keras.layers.Conv2D(32, 3, padding="same", name="conv1"),
            keras.layers.BatchNormalization(name="bn1"),
            L.BinaryConv2D(
                32, 3, padding="same", kernel_quantizer="magnitude_aware_sign", name="conv2", **SIGN
            ),
            keras.layers.BatchNormalization(name="bn2"),
            L.BinaryDepthwiseConv2D(
                3, padding="same", kernel_quantizer="ste_sign", name="dw", **SIGN
            ),
            keras.layers.BatchNormalization(name="bn3"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            L.BinaryDense(64, kernel_quantizer="magnitude_aware_sign", name="dense1", **SIGN),
            keras.layers.BatchNormalization(name="bn4"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="tiny_bnn",
    )
    _randomize_batchnorm(model)
    return model


@pytest.fixture(scope="module")
def tiny():
    return _tiny_model()


@pytest.fixture(scope="module")
def inputs():
    return np.random.default_rng(0).normal(size=(48, 8, 8, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def stock(tiny, inputs, tmp_path_factory):
    path = tmp_path_factory.mktemp("binary") / "tiny.tflite"
    report = export(tiny, path, quantization="binary", verify_data=inputs, verbose=0)
    return report, path.read_bytes()


def _buffers(flatbuffer):
    root = schema.Model.GetRootAsModel(flatbuffer, 0)
    return [root.Buffers(i).DataAsNumpy() for i in range(root.BuffersLength())]


def _binary_layers(model):
    return [layer for layer in model.layers if hasattr(layer, "binary_kernel")]


def test_stock_file_packs_every_binary_layer_and_matches_keras(stock, tiny, inputs):
    report, flatbuffer = stock
    assert report.quantization == "binary" and report.fallback is None
    assert report.binary_layers == 3
    assert report.bits_per_binary_weight <= 1.2
    assert report.verified and report.verify_samples == len(inputs)
    assert report.top1_agreement == 1.0
    assert report.max_abs_diff < 1e-4, report.max_abs_diff
    # builtin ops only: the weights are expanded by integer ops in the graph
    assert {"RIGHT_SHIFT[int32]", "FLOOR_MOD[int32]"} <= set(report.op_counts)
    assert report.op_counts["CONV_2D[float32]"] == 2
    assert report.op_counts["DEPTHWISE_CONV_2D[float32]"] == 1
    # an unmodified interpreter (default op resolver, XNNPACK) runs it at other batch sizes
    interpreter = Interpreter(model_content=flatbuffer)
    runner = interpreter.get_signature_runner()
    for batch in (inputs[:1], inputs[:5]):
        (got,) = runner(input_0=batch).values()
        np.testing.assert_allclose(got, tiny.predict(batch, verbose=0), rtol=1e-4, atol=1e-4)


def test_file_stores_the_keras_signs_at_one_bit(stock, tiny):
    _, flatbuffer = stock
    buffers = _buffers(flatbuffer)
    binarized = 0
    packed_bytes = 0
    for layer in _binary_layers(tiny):
        values, _ = layer.binary_kernel()  # the signs the Keras forward pass uses
        if isinstance(layer, L.BinaryConv2D):
            values = np.transpose(values, (3, 0, 1, 2))  # CONV_2D's (out, kh, kw, in)
        elif isinstance(layer, L.BinaryDense):
            values = values.T  # FULLY_CONNECTED's (units, in)
        n = values.size
        words = -(-n // 32)
        matches = [
            b
            for b in buffers
            if isinstance(b, np.ndarray)
            and b.size == 4 * words
            and np.array_equal(np.unpackbits(b, bitorder="little")[:n], (values > 0).ravel())
        ]
        assert len(matches) == 1, layer.name
        binarized += n
        packed_bytes += 4 * words
    # Everything else in the file is at most the float parameters of the other layers
    # plus one float scale per binary output channel: the 1-bit weights were not re-inflated.
    others = sum(
        int(np.prod(w.shape))
        for layer in tiny.layers
        if layer not in _binary_layers(tiny)
        for w in layer.weights
    )
    channels = 32 + 64  # scales of conv2 and dense1 (the depthwise kernel is unscaled)
    total = sum(b.size for b in buffers if isinstance(b, np.ndarray))
    assert total - packed_bytes <= 4 * (others + channels) + 512
    assert 8 * (packed_bytes + 4 * channels) / binarized <= 1.2


def test_digits_binary_cnn_file_is_15x_smaller_than_float_and_agrees(digits, tmp_path):
    keras.utils.set_random_seed(0)
    model = digits_binary_cnn()
    train_classifier(model, digits, epochs=1, learning_rate=1e-2, verbose=0)
    report = export(
        model,
        tmp_path / "bnn.tflite",
        quantization="binary",
        verify_data=digits.x_test,
        verify_labels=digits.y_test,
        verbose=0,
    )
    float_bytes = len(convert(model, None, verbose=0))
    assert report.bytes * 15 <= float_bytes, (report.bytes, float_bytes)
    assert report.verify_samples == len(digits.x_test)
    assert report.top1_agreement == 1.0
    assert report.tflite_accuracy == report.keras_accuracy
    assert report.bits_per_binary_weight <= 1.2
    assert np.isfinite(report.max_abs_diff) and report.max_abs_diff < 1e-3


def test_custom_ops_request_warns_and_writes_the_stock_file_with_a_fixed_batch(tiny, tmp_path):
    path = tmp_path / "custom.tflite"
    # a fixed batch folds every shape: the run-time dependence must come from the data
    signature = [tf.TensorSpec((2, 8, 8, 4), tf.float32)]
    with pytest.warns(UserWarning, match="custom_ops=True.*not available.*stock-LiteRT"):
        report = export(
            tiny, path, quantization="binary", custom_ops=True, input_signature=signature, verbose=0
        )
    assert report.quantization == "binary" and report.binary_layers == 3
    assert report.bits_per_binary_weight <= 1.2 and report.top1_agreement == 1.0


@pytest.mark.parametrize("failure", ["folded", "converter"])
def test_stock_failure_falls_back_to_the_int8_path_with_a_message(
    failure, tiny, inputs, tmp_path, monkeypatch
):
    if failure == "folded":  # as if the converter had folded the words into float kernels
        monkeypatch.setattr(binary_packed, "find_packed", lambda flatbuffer, plan: {})
        match = "the TFLite converter folded the packed weights of conv2, dw, dense1"
    else:  # as if the converter (or an op) refused the bit-packed graph
        real = binary_packed.convert

        def refuse_stock(model, quantization=None, *args, **kwargs):
            if quantization is None:
                raise RuntimeError("no RIGHT_SHIFT here")
            return real(model, quantization, *args, **kwargs)

        monkeypatch.setattr(binary_packed, "convert", refuse_stock)
        match = "converting the bit-packed graph failed .RuntimeError: no RIGHT_SHIFT here."
    with pytest.warns(
        UserWarning, match=f"quantization='binary': {match}.*fell back to quantization='dynamic'"
    ):
        report = export(
            tiny, tmp_path / "fb.tflite", quantization="binary", verify_data=inputs, verbose=0
        )
    assert report.quantization == "dynamic" and report.binary_layers == 0
    assert report.bits_per_binary_weight is None and report.fallback
    assert report.verified and report.top1_agreement >= 0.9
    assert any(key.endswith("/int8]") for key in report.op_counts)  # hybrid int8 weights


def test_frozen_and_ternary_layers(inputs):
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            keras.layers.Flatten(),
            keras.layers.Dense(40, name="first"),
            keras.layers.BatchNormalization(name="bn1"),
            L.BinaryDense(24, kernel_quantizer="ste_tern", name="ternary", **SIGN),
            keras.layers.BatchNormalization(name="bn2"),
            L.BinaryDense(5, kernel_quantizer="magnitude_aware_sign", name="odd", **SIGN),
        ]
    )
    _randomize_batchnorm(model)
    assert L.freeze_binary(model, use_kernels=False)["odd"] == "packed"
    expected = model.predict(inputs, verbose=0)
    packing = convert_binary(model)
    assert packing.layers == ("odd",)  # 24 x 5 = 120 weights: a partly used last word
    assert [name for name, _ in packing.skipped] == ["ternary"]
    assert "kernel_quantizer" in packing.skipped[0][1]
    got = TFLiteModel(packing.flatbuffer).predict(inputs)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # the model is left as it was: still frozen, its own call, same outputs
    layer = model.get_layer("odd")
    assert layer.inference_path == "packed" and "call" not in vars(layer)
    np.testing.assert_array_equal(model.predict(inputs, verbose=0), expected)


@pytest.mark.parametrize("name", ["conv2", "dw", "dense1"])
def test_unpack_graph_gives_the_keras_kernel_exactly(tiny, name):
    plan = plan_binary_export(tiny)
    (spec,) = [layer for layer in plan.layers if layer.name == name]
    layer = tiny.get_layer(name)
    kernel = layer._quantize_kernel(layer.kernel)  # what the Keras forward pass multiplies by
    unpacked = binary_graph.unpack_kernel(spec, tf.range(32)[None, :])
    np.testing.assert_array_equal(unpacked.numpy(), keras.ops.convert_to_numpy(kernel))
    expected = layer.quantized_kernel()  # depthwise: (kh, kw, 1, channels), one scale each
    values = spec.values().reshape(expected.shape)
    scales = 1.0 if spec.scales is None else spec.scales
    np.testing.assert_array_equal(values * scales, expected)


def test_bad_requests_raise_before_anything_is_written(tiny, inputs, tmp_path):
    path = tmp_path / "never.tflite"
    float_model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)], name="plain")
    with pytest.raises(ValueError, match=r"quantization='binary'.*'plain'.*no BinaryDense"):
        export(float_model, path, quantization="binary", verbose=0)
    ternary = keras.Sequential(
        [keras.Input((8,)), L.BinaryDense(3, kernel_quantizer="ste_tern")], name="tern"
    )
    with pytest.raises(ValueError, match=r"'tern'.*kernel_quantizer=.*binary"):
        export(ternary, path, quantization="binary", verbose=0)
    with pytest.raises(ValueError, match="custom_ops must be True or False, got 'yes'"):
        export(tiny, path, quantization="binary", custom_ops="yes", verbose=0)
    with pytest.raises(ValueError, match="custom_ops=True applies to quantization='binary' only"):
        export(tiny, path, quantization="int8", custom_ops=True, verbose=0)
    with pytest.raises(ValueError, match="sparsity=True does not apply to quantization='binary'"):
        export(tiny, path, quantization="binary", sparsity=True, verbose=0)
    with pytest.raises(ValueError, match="representative_data"):
        export(tiny, path, quantization="binary", representative_data=inputs[:, :4], verbose=0)
    with pytest.raises(ValueError, match=r"quantization='binaryy' is not supported.*'binary'"):
        export(tiny, path, quantization="binaryy", verbose=0)
    with pytest.raises(ValueError, match=r"written by tfc\.tflite_export\.export"):
        convert(tiny, "binary")
    assert not path.exists()
