"""MobileNetV2-style blocks (BN, ReLU6, ZeroPadding, depthwise, residual add, softmax head).

A tiny hand-built network with the same layer pattern as
``keras.applications.MobileNetV2`` (the full model is measured in
``benchmarks/architectures.py``): QAT int8 export must be int8 end to end, and
channel pruning + ``shrink_model`` must remove depthwise channels with the
expansion filters that feed them, keeping outputs equal to the masked model.
"""

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.callbacks import GradualPruning
from tfcompress.export.tflite import export
from tfcompress.quantization.activation import QuantizeOutput


def _bn_relu6(x, name):
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu")(x)


def _block(x, expand, out, stride, name):
    shortcut = x
    y = keras.layers.Conv2D(expand, 1, use_bias=False, name=f"{name}_expand")(x)
    y = _bn_relu6(y, f"{name}_expand")
    if stride == 2:
        y = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_pad")(y)
    y = keras.layers.DepthwiseConv2D(
        3, strides=stride, padding="same" if stride == 1 else "valid", use_bias=False,
        name=f"{name}_depthwise",
    )(y)  # fmt: skip
    y = _bn_relu6(y, f"{name}_depthwise")
    y = keras.layers.Conv2D(out, 1, use_bias=False, name=f"{name}_project")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_project_bn")(y)
    if stride == 1 and x.shape[-1] == out:
        y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return y


def tiny_mobilenet(classes=5):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="Conv1")(inputs)
    x = _bn_relu6(x, "Conv1")
    x = _block(x, 16, 8, 1, "block_1")
    x = _block(x, 16, 8, 1, "block_2")
    x = _block(x, 24, 12, 2, "block_3")
    x = keras.layers.Conv2D(32, 1, use_bias=False, name="Conv_1")(x)
    x = _bn_relu6(x, "Conv_1")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs)


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, 16, 16, 3)).astype("float32"), rng.integers(0, 5, n)


def _fit(model, x, y, callbacks=None, epochs=2):
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=callbacks)


def _prunable(layer):
    return type(layer) is keras.layers.Conv2D and (
        layer.name.endswith("_expand") or layer.name in ("Conv1", "Conv_1")
    )


def test_qat_int8_export_is_integer_end_to_end(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = _data()
    qat, log = tfc.quantize_model(tiny_mobilenet(), return_log=True)
    assert log.skipped == []
    assert isinstance(qat.get_layer("block_2_add"), QuantizeOutput)
    assert isinstance(qat.get_layer("pool"), QuantizeOutput)
    # The conv before a folded BN + ReLU6 leaves the range to the activation.
    assert qat.get_layer("block_1_expand").activation_quantizer is None
    assert qat.get_layer("block_1_project").activation_quantizer is not None
    _fit(qat, x, y)
    report = export(qat, tmp_path / "q.tflite", quantization="int8", verify_data=x, verbose=0)
    ops = report.op_counts
    for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MEAN"):
        kinds = [k for k in ops if k.split("[")[0] == op]
        assert kinds == [f"{op}[int8]"], ops
    assert not any(k.startswith(("RELU", "BATCH", "MUL")) for k in ops), ops  # fused/folded
    assert ops.get("QUANTIZE[float32]") == 1 and ops.get("DEQUANTIZE[int8]") == 1, ops
    assert report.top1_agreement >= 0.9
    assert report.max_abs_diff < 0.05


def test_softmax_head_quantizes_logits_not_probabilities():
    keras.utils.set_random_seed(0)
    layer = tfc.layers.QuantDense(4, activation="softmax", input_quantizer="int8_activation")
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    layer(x, training=True)  # sets the moving ranges
    out = np.asarray(layer(x))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)  # softmax is the last step
    logits = np.asarray(
        layer._quantize("activation", layer._forward(layer._quantize("input", x, False),
                                                     layer.quantized_kernel(), None), False)
    )  # fmt: skip
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_quantize_output_round_trips(tmp_path):
    inputs = [keras.Input((4,)), keras.Input((4,))]
    out = QuantizeOutput(keras.layers.Add(name="inner"), name="qadd")(inputs)
    model = keras.Model(inputs, out)
    a, b = np.ones((2, 4), "float32"), np.full((2, 4), 0.5, "float32")
    model([a, b], training=True)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(
        loaded.predict([a, b], verbose=0), model.predict([a, b], verbose=0)
    )
    with pytest.raises(ValueError, match="quantizer=None"):
        QuantizeOutput(keras.layers.Add(), quantizer=None)


def test_channel_pruning_masks_bn_and_depthwise_and_shrink_halves_the_blocks():
    keras.utils.set_random_seed(0)
    x, y = _data()
    model = tiny_mobilenet()
    pruning = GradualPruning(0.5, schedule="constant", granularity="channel", layers=_prunable)
    _fit(model, x, y, callbacks=[pruning], epochs=1)
    kernel = model.get_layer("block_1_expand").kernel.numpy()
    dead = np.all(kernel.reshape(-1, kernel.shape[-1]) == 0, axis=0)
    assert dead.sum() == 8
    # The pruned channel is zeroed through BN and the depthwise conv.
    bn = model.get_layer("block_1_expand_bn")
    assert np.all(bn.gamma.numpy()[dead] == 0) and np.all(bn.beta.numpy()[dead] == 0)
    dw = model.get_layer("block_1_depthwise").kernel.numpy()
    assert np.all(dw[:, :, dead, :] == 0) and np.any(dw[:, :, ~dead, :] != 0)

    small = tfc.shrink_model(model)
    np.testing.assert_allclose(
        small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5, rtol=0
    )
    for name, before in (("block_1", 16), ("block_3", 24)):
        assert small.get_layer(f"{name}_expand").filters == before // 2
        assert small.get_layer(f"{name}_depthwise").kernel.shape[2] == before // 2
        assert small.get_layer(f"{name}_depthwise_bn").gamma.shape[0] == before // 2
        # Residual stream untouched: channels stay aligned across the adds.
        assert (
            small.get_layer(f"{name}_project").filters == model.get_layer(f"{name}_project").filters
        )
    # Conv1 is the residual stream of block_1 (pinned by the add); Conv_1 feeds the head.
    assert small.get_layer("Conv1").filters == 8 and small.get_layer("Conv_1").filters == 16
    before, after = tfc.summary(model, print_fn=None), tfc.summary(small, print_fn=None)
    assert after.total_macs < 0.6 * before.total_macs
    assert after.total_params < 0.65 * before.total_params


def test_pruning_a_depthwise_feeding_conv_without_followers_keeps_old_behaviour():
    # A conv followed by a sigmoid: the chain is not zero-preserving, so nothing
    # after the conv is masked (its channels are kept unless shrink can fold them).
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(8, 1, activation="sigmoid", name="c")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, out)
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")
    model.compile("adam", "mse")
    model.fit(
        x, np.zeros((16, 2)), epochs=1, verbose=0,
        callbacks=[GradualPruning(0.5, schedule="constant", granularity="channel", layers="c")],
    )  # fmt: skip
    assert np.all(model.get_layer("bn").gamma.numpy() != 0)
