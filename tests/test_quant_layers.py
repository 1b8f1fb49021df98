"""Quantization-aware layers: shared layer checks, Keras signatures, float twins, int8 export."""

import inspect

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tests.layer_checks import check_layer

L = tfc.layers

LAYER_CASES = {
    "dense": (
        lambda: L.QuantDense(6, activation="relu", input_quantizer="int8_activation"),
        (4, 5),
    ),
    "dense_lsq": (
        lambda: L.QuantDense(
            6, kernel_quantizer="int4_lsq", activation_quantizer="int8_lsq_activation"
        ),
        (4, 5),
    ),
    "conv2d": (
        lambda: L.QuantConv2D(4, 3, padding="same", input_quantizer="int8_activation"),
        (2, 6, 6, 3),
    ),
    "conv2d_pact": (
        lambda: L.QuantConv2D(
            4,
            3,
            activation="relu",
            kernel_quantizer="int4_per_channel",
            activation_quantizer="int4_pact",
        ),
        (2, 6, 6, 3),
    ),
    "conv1d_causal": (lambda: L.QuantConv1D(4, 3, padding="causal"), (2, 8, 3)),
    "depthwise": (
        lambda: L.QuantDepthwiseConv2D(3, depth_multiplier=2, input_quantizer="int8_activation"),
        (2, 6, 6, 3),
    ),
    "activation": (lambda: L.QuantizeActivation("int8_activation", activation="relu"), (4, 5)),
    "separable": (
        lambda: L.QuantSeparableConv2D(
            4, 3, depth_multiplier=2, activation="relu", input_quantizer="int8_activation"
        ),
        (2, 6, 6, 3),
    ),
    "separable_lsq": (
        lambda: L.QuantSeparableConv2D(4, 3, padding="same", kernel_quantizer="int4_lsq"),
        (2, 6, 6, 3),
    ),
    "conv2d_transpose": (
        lambda: L.QuantConv2DTranspose(
            4, 3, strides=2, padding="same", input_quantizer="int8_activation"
        ),
        (2, 4, 4, 3),
    ),
}


JAX_CASES = ("dense_lsq",)  # learned-range quantizers: the stateful path


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=pytest.mark.jax) if c in JAX_CASES else c for c in sorted(LAYER_CASES)],
)
def test_shared_layer_checks(case, tmp_path):
    factory, shape = LAYER_CASES[case]
    result = check_layer(factory, shape, tmp_path, atol=1e-5, expect_trainable=case != "activation")
    layer = result.model.layers[-1]
    assert layer.is_quantization_aware


QUANTIZER_ARGS = ["kernel_quantizer", "input_quantizer", "activation_quantizer"]


@pytest.mark.parametrize(
    "quant,base,extra_args",
    [
        (L.QuantDense, keras.layers.Dense, QUANTIZER_ARGS),
        (L.QuantConv2D, keras.layers.Conv2D, QUANTIZER_ARGS),
        (L.QuantConv1D, keras.layers.Conv1D, QUANTIZER_ARGS),
        (L.QuantDepthwiseConv2D, keras.layers.DepthwiseConv2D, QUANTIZER_ARGS),
        (L.QuantConv2DTranspose, keras.layers.Conv2DTranspose, QUANTIZER_ARGS),
        (
            L.QuantSeparableConv2D,
            keras.layers.SeparableConv2D,
            [*QUANTIZER_ARGS, "intermediate_quantizer"],
        ),
    ],
)
def test_signature_matches_keras(quant, base, extra_args):
    ours = inspect.signature(quant.__init__).parameters
    theirs = inspect.signature(base.__init__).parameters
    for name, param in theirs.items():
        assert name in ours, f"{quant.__name__} lacks argument {name!r}"
        assert ours[name].default == param.default, (
            f"{name}: {ours[name].default!r} != {param.default!r}"
        )
        assert ours[name].kind == param.kind, name
    extra = [n for n in ours if n not in theirs]
    assert extra == extra_args
    assert list(ours)[: len(theirs) - 1] == list(theirs)[:-1]  # same order, **kwargs last


@pytest.mark.parametrize(
    "quant,float_layer,shape",
    [
        (
            lambda: L.QuantDense(32, activation="relu", input_quantizer="int8_activation"),
            lambda: keras.layers.Dense(32, activation="relu"),
            (64, 48),
        ),
        (
            lambda: L.QuantConv2D(16, 3, padding="same", input_quantizer="int8_activation"),
            lambda: keras.layers.Conv2D(16, 3, padding="same"),
            (16, 8, 8, 4),
        ),
    ],
)
def test_8bit_layer_close_to_float_twin(quant, float_layer, shape):
    """Stated tolerance: 8-bit weights and activations stay within 2% of the output range."""
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    reference = float_layer()
    expected = keras.ops.convert_to_numpy(reference(x))
    layer = quant()
    layer(x)
    layer._kernel.assign(reference.kernel.numpy())
    layer.bias.assign(reference.bias.numpy())
    layer(x, training=True)  # one pass sets the activation ranges
    got = keras.ops.convert_to_numpy(layer(x, training=False))
    error = np.abs(got - expected).max() / np.abs(expected).max()
    assert error < 0.02, error
    assert not np.array_equal(got, expected)  # it does quantize


def test_compression_stats_feed_summary():
    model = keras.Sequential(
        [keras.Input((10,)), L.QuantDense(20, kernel_quantizer="int4"), L.QuantDense(5)]
    )
    summary = tfc.summary(model, print_fn=None)
    first, second = summary.layers
    assert first.bits_per_weight == 4 and second.bits_per_weight == 8
    assert first.params == 10 * 20 + 20
    assert first.bytes == pytest.approx(200 * 4 / 8 + 20 * 4 + 4)


def test_small_qat_model_exports_full_int8(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            L.QuantConv2D(
                4, 3, padding="same", activation="relu", input_quantizer="int8_activation"
            ),
            L.QuantDepthwiseConv2D(3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            L.QuantDense(
                10, kernel_quantizer="int8_lsq", activation_quantizer="int8_lsq_activation"
            ),
        ]
    )
    x = np.random.default_rng(0).uniform(size=(64, 8, 8, 2)).astype("float32")
    model.compile("adam", "mse")
    model.fit(x, np.zeros((64, 10)), epochs=1, verbose=0)
    report = tfc.tflite_export.export(
        model, tmp_path / "m.tflite", quantization="int8", verify_data=x, verbose=0
    )
    compute = {
        k: v
        for k, v in report.op_counts.items()
        if k.split("[")[0] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
    }
    assert compute == {"CONV_2D[int8]": 1, "DEPTHWISE_CONV_2D[int8]": 1, "FULLY_CONNECTED[int8]": 1}
    assert report.top1_agreement >= 0.95
    scale = np.abs(model.predict(x, verbose=0)).max()
    assert report.max_abs_diff <= 0.05 * scale


@pytest.mark.parametrize(
    "layer,shape,expected_ops",
    [
        (
            lambda: L.QuantSeparableConv2D(
                6, 3, padding="same", depth_multiplier=2, input_quantizer="int8_activation"
            ),
            (32, 6, 6, 3),
            ["DEPTHWISE_CONV_2D", "CONV_2D"],
        ),
        (
            lambda: L.QuantConv2DTranspose(
                6, 3, strides=2, padding="same", input_quantizer="int8_activation"
            ),
            (32, 4, 4, 3),
            ["TRANSPOSE_CONV"],
        ),
    ],
    ids=["separable", "transpose"],
)
def test_new_conv_layers_export_int8_ops(layer, shape, expected_ops, tmp_path):
    """The interpreter's op details: int8 weights and int8 activations in and out."""
    model = keras.Sequential([keras.Input(shape[1:]), layer()])
    x = np.random.default_rng(0).uniform(size=shape).astype("float32")
    model(x, training=True)  # one pass sets the activation ranges
    report = tfc.tflite_export.export(
        model, tmp_path / "m.tflite", quantization="int8", verify_data=x, verbose=0
    )
    compute = [
        op
        for op in tfc.tflite_export.TFLiteModel(tmp_path / "m.tflite").ops()
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV")
    ]
    assert [op.name for op in compute] == expected_ops
    for op in compute:
        # TRANSPOSE_CONV takes (output shape, weights, input, bias); the others (input, weights, bias).
        data = op.input_dtypes[2] if op.name == "TRANSPOSE_CONV" else op.input_dtypes[0]
        weights = op.input_dtypes[1]
        assert (data, weights, op.output_dtypes[0]) == ("int8", "int8", "int8"), op
    scale = np.abs(model.predict(x, verbose=0)).max()
    assert report.max_abs_diff <= 0.05 * scale
