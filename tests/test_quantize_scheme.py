"""quantize_model's scheme (user rules), skipped-layer records, config names, new conv layers,
warnings for layers left float, and models with dict inputs/outputs and operation nodes."""

import warnings

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.transforms import (
    CONFIG_NAMES,
    OutputRangeRule,
    QuantizeConfig,
    QuantizeRule,
    QuantizeScheme,
    Replacement,
    SkipReason,
)

L = tfc.layers


@keras.saving.register_keras_serializable(package="tests_scheme")
class Scale(keras.layers.Layer):
    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def _scale_model():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, name="d1")(inputs)
    x = Scale(3.0, name="my_scale")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="out")(x))


def test_user_rule_for_a_custom_layer(tmp_path):
    model = _scale_model()
    # Default scheme: no rule, so the layer is listed in a warning and in the log.
    with pytest.warns(UserWarning, match=r"left 1 layer\(s\) float.*my_scale \(Scale\)"):
        _, log = tfc.quantize_model(model, return_log=True)
    assert [(s.name, s.kind, s.reason) for s in log.skipped] == [
        ("my_scale", "Scale", SkipReason.NO_RULE)
    ]
    assert log.skipped[0] == ("my_scale", "Scale", "no int8 rule for this layer type")

    scheme = QuantizeScheme.default().register(Scale, OutputRangeRule())
    qat, log = tfc.quantize_model(model, QuantizeConfig(scheme=scheme), return_log=True)
    assert log.skipped == []
    wrapped = qat.get_layer("my_scale")
    assert isinstance(wrapped, L.QuantizeOutput) and wrapped.layer.factor == 3.0
    assert qat.get_layer("out").input_quantizer is None  # the Scale output carries a range now
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    qat(x, training=True)
    expected = model.predict(x, verbose=0)
    got = qat.predict(x, verbose=0)
    assert np.abs(got - expected).max() <= 0.03 * np.abs(expected).max()
    # The user's layer runs as an int8 MUL in TFLite.
    tfc.tflite_export.export(qat, tmp_path / "s.tflite", quantization="int8", verbose=0)
    ops = tfc.tflite_export.TFLiteModel(tmp_path / "s.tflite").ops()
    mul = [op for op in ops if op.name == "MUL"]
    assert mul and all(op.output_dtypes == ("int8",) for op in mul)


def test_a_subclassed_rule_decides_the_replacement():
    class DoubleRange(QuantizeRule):
        """A rule of one's own: the layer becomes a QuantizeActivation with a 4-bit range."""

        def replacement(self, layer, plan):
            return Replacement(L.QuantizeActivation("int4_pact", name=layer.name))

    scheme = QuantizeScheme().register(Scale, DoubleRange())  # an empty table plus one rule
    with pytest.warns(UserWarning, match=r"d1 \(Dense\), out \(Dense\)"):
        qat, log = tfc.quantize_model(_scale_model(), {"scheme": scheme}, return_log=True)
    assert [name for name, _, _ in log.replaced] == ["my_scale"]
    assert isinstance(qat.get_layer("my_scale").quantizer, tfc.quantizers.PACTQuantizer)
    assert {s.name: s.reason for s in log.skipped} == {
        "d1": SkipReason.NO_RULE,
        "out": SkipReason.NO_RULE,
    }
    # An "output" rule switched off by quantize_activation_layers=False: recorded, no warning.
    off = {"scheme": QuantizeScheme.default().register(Scale, OutputRangeRule())}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, log = tfc.quantize_model(
            _scale_model(), {**off, "quantize_activation_layers": False}, return_log=True
        )
    assert [name for name, _, _ in log.replaced] == ["d1", "out"]
    assert log.skipped == [("my_scale", "Scale", SkipReason.OUTPUT_RANGES_OFF)]
    with pytest.raises(TypeError, match=r"rule must be a QuantizeRule, got str"):
        QuantizeScheme().register(Scale, "output")
    with pytest.raises(TypeError, match=r"config.scheme must be a QuantizeScheme"):
        tfc.quantize_model(_scale_model(), {"scheme": {Scale: OutputRangeRule()}})


def test_config_names_are_one_documented_set():
    assert list(CONFIG_NAMES) == ["int2", "int3", "int4", "int5", "int6", "int7", "int8"]
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    assert tfc.quantize_model(model, "INT8").get_layer("d").kernel_quantizer.bits == 8
    assert tfc.quantize_model(model, "int3").get_layer("d").kernel_quantizer.bits == 3
    for bad in ("int9", "int16", "float8", "int 8", "8"):
        with pytest.raises(ValueError) as error:
            tfc.quantize_model(model, bad)
        assert f"config={bad!r} is not a known name; expected one of " in str(error.value)
        assert "int2, int3, int4, int5, int6, int7, int8 (any case" in str(error.value)


def _conv_family_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.SeparableConv2D(8, 3, padding="same", use_bias=False, name="sep")(inputs)
    x = keras.layers.BatchNormalization(name="sep_bn")(x)
    x = keras.layers.ReLU(6.0, name="sep_relu")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="down")(x)
    x = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", name="up")(x)
    x = keras.layers.BatchNormalization(name="up_bn")(x)
    x = keras.layers.Conv3D(2, 1, name="c3")(keras.layers.Reshape((8, 8, 4, 1))(x))
    model = keras.Model(inputs, keras.layers.Flatten()(x))
    rng = np.random.default_rng(0)
    for bn in (model.get_layer("sep_bn"), model.get_layer("up_bn")):
        n = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.5, 2, n))
        bn.beta.assign(rng.normal(size=n))
        bn.moving_mean.assign(rng.normal(size=n))
        bn.moving_variance.assign(rng.uniform(0.5, 2, n))
    return model


def test_separable_and_transpose_are_quantized_and_folded_conv3d_is_named(tmp_path):
    model = _conv_family_model()
    with pytest.warns(UserWarning, match=r"left 1 layer\(s\) float.*: c3 \(Conv3D\)\."):
        qat, log = tfc.quantize_model(model, return_log=True)
    assert isinstance(qat.get_layer("sep"), L.QuantSeparableConv2D)
    assert isinstance(qat.get_layer("up"), L.QuantConv2DTranspose)
    assert [s.name for s in log.skipped] == ["c3"]
    # BatchNorm folded into the pointwise kernel and the transpose kernel's output axis (2).
    for conv, bn, kernel, axis in (
        ("sep", "sep_bn", "pointwise_kernel", 3),
        ("up", "up_bn", "kernel", 2),
    ):
        bn = model.get_layer(bn)
        factor = bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
        shape = [1, 1, 1, 1]
        shape[axis] = -1
        old = getattr(model.get_layer(conv), kernel).numpy()
        new = getattr(qat.get_layer(conv), kernel).numpy()
        np.testing.assert_allclose(new, old * factor.reshape(shape), rtol=1e-5)
    assert qat.get_layer("sep").activation_quantizer is None  # ReLU6 fuses into it
    x = np.random.default_rng(1).uniform(size=(32, 8, 8, 3)).astype("float32")
    qat(x, training=True)
    expected = model.predict(x, verbose=0)
    got = qat.predict(x, verbose=0)
    assert np.abs(got - expected).max() <= 0.06 * np.abs(expected).max()
    qat.save(tmp_path / "qat.keras")
    loaded = keras.models.load_model(tmp_path / "qat.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), got)
    tfc.tflite_export.export(qat, tmp_path / "q.tflite", quantization="int8", verbose=0)
    ops = tfc.tflite_export.TFLiteModel(tmp_path / "q.tflite").ops()
    int8 = {op.name for op in ops if op.output_dtypes == ("int8",) and "int8" in op.input_dtypes}
    assert {"DEPTHWISE_CONV_2D", "CONV_2D", "TRANSPOSE_CONV"} <= int8
    assert "CONV_3D" in {op.name for op in ops} - int8  # Conv3D stays float, as warned


def _text_model():
    """A dict-input, dict-output backbone nested in a head model that indexes its outputs."""
    specs = {"token_ids": (6, 5), "padding_mask": (6, 1), "segment_ids": (6, 2)}
    inner = {k: keras.Input(shape, name=k) for k, shape in specs.items()}
    x = keras.layers.Concatenate(name="features")(list(inner.values()))
    sequence = keras.layers.Dense(8, activation="relu", name="encoder")(x)
    pooled = keras.layers.Dense(8, name="pooler")(sequence[:, 0])
    backbone = keras.Model(
        inner, {"sequence_output": sequence, "pooled_output": pooled}, name="backbone"
    )
    inputs = {k: keras.Input(shape, name=k) for k, shape in specs.items()}
    features = backbone(inputs)
    logits = keras.layers.Dense(3, name="head")(features["pooled_output"])
    mean = keras.ops.mean(features["sequence_output"], axis=1)
    extra = keras.layers.Dense(2, name="aux")(mean)
    return keras.Model(inputs, {"logits": logits, "aux": [extra, features["pooled_output"]]})


def test_nested_dict_backbone_with_operation_nodes_keeps_structure():
    model = _text_model()
    with pytest.warns(UserWarning, match=r"backbone/features \(Concatenate\)"):
        qat, log = tfc.quantize_model(model, return_log=True)
    assert sorted(n for n, _, _ in log.replaced) == [
        "aux",
        "backbone/encoder",
        "backbone/pooler",
        "head",
    ]
    assert list(qat.input) == list(model.input)  # same dict keys, same order
    assert set(qat.output) == {"logits", "aux"} and len(qat.output["aux"]) == 2
    rng = np.random.default_rng(0)
    data = {
        k: rng.normal(size=(16, *v.shape[1:])).astype("float32") for k, v in model.input.items()
    }
    qat(data, training=True)
    expected, got = model.predict(data, verbose=0), qat.predict(data, verbose=0)
    assert set(got) == {"logits", "aux"}
    for want, have in [(expected["logits"], got["logits"]), *zip(expected["aux"], got["aux"])]:
        assert np.abs(have - want).max() <= 0.05 * np.abs(want).max()
