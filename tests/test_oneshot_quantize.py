"""tfc.oneshot.quantize / compress: the GPTQ grid in Quant layers, ranges, .keras and TFLite files."""

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

import tfcompress as tfc
from tfcompress.quantization.learned import LSQQuantizer


def _cnn():
    return keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
            keras.layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu", name="fc"),
            keras.layers.Dense(5, name="logits"),
        ],
        name="cnn",
    )


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(160, 8, 8, 1))
    # two strongly correlated channels
    return np.concatenate([base, base + 0.3 * rng.normal(size=base.shape)], -1).astype("float32")


def _file_kernels(path):
    """int8 constant tensors of a .tflite file: name -> (integers, dequantized values)."""
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    found = {}
    for detail in interpreter.get_tensor_details():
        params = detail["quantization_parameters"]
        if detail["dtype"] != np.int8 or len(detail["shape"]) < 2 or not len(params["scales"]):
            continue
        try:
            values = interpreter.get_tensor(detail["index"])
        except ValueError:
            continue
        axis = params["quantized_dimension"]
        scales = params["scales"].astype(np.float32)
        shape = [1] * values.ndim
        shape[axis] = -1
        scale = scales.reshape(shape) if scales.size > 1 else scales[0]
        found[tuple(values.shape)] = (values, values.astype(np.float32) * scale)
    return found


def _stored_types(path):
    """Tensor type name of every constant weight tensor in the file, by shape."""
    from tensorflow.lite.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    found = {}
    for t in range(graph.TensorsLength()):
        tensor = graph.Tensors(t)
        if tensor.ShapeLength() >= 2 and model.Buffers(tensor.Buffer()).DataLength():
            found[tuple(tensor.ShapeAsNumpy())] = names[tensor.Type()]
    return found


def _keras_kernel_as_stored(layer):
    """The kernel Keras computes with, laid out as TFLite stores it."""
    kernel = keras.ops.convert_to_numpy(layer.quantized_kernel())
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return kernel.reshape(1, *kernel.shape[:2], -1)
    if isinstance(layer, keras.layers.Conv2D):
        return kernel.transpose(3, 0, 1, 2)
    return kernel.T


def test_gptq_beats_rtn_and_carries_the_grid_in_quant_layers(data):
    model = _cnn()
    results = {}
    for method in ("rtn", "gptq"):
        quant, report = tfc.oneshot.quantize(
            model, data, bits=4, method=method, per_channel=False, verbose=0, return_report=True
        )
        results[method] = report
        for name in ("conv", "dw", "fc", "logits"):
            layer = quant.get_layer(name)
            assert type(layer).__name__.startswith("Quant")
            assert isinstance(layer.kernel_quantizer, LSQQuantizer)
            step = layer.quantizer_state["kernel"]["step"].numpy()
            levels = layer.kernel.numpy() / step
            np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
            assert np.abs(np.round(levels)).max() <= 7
            # the stored kernel is a fixed point of the layer's fake quantization
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(layer.quantized_kernel()), layer.kernel.numpy()
            )
    for name in ("conv", "fc", "logits"):
        gptq, rtn = results["gptq"].layer(name), results["rtn"].layer(name)
        assert gptq.error < rtn.error, (name, gptq, rtn)
        assert rtn.error == pytest.approx(rtn.baseline_error)


def test_quantize_keeps_the_users_model_and_calibrates_ranges(data):
    model = _cnn()
    before = [w.copy() for w in model.get_weights()]
    quant = tfc.oneshot.quantize(model, data, bits=8, verbose=0)
    for old, now in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, now)
    fc = quant.get_layer("fc")
    state = fc.quantizer_state["activation"]
    assert state["ready"].numpy() == 1.0 and state["max"].numpy() > 0
    hidden = keras.Model(quant.inputs, fc.output).predict(data, verbose=0)
    assert state["max"].numpy() == pytest.approx(hidden.max(), rel=0.02)
    reference = model.predict(data, verbose=0)
    assert np.abs(quant.predict(data, verbose=0) - reference).max() < 0.05 * np.abs(reference).max()


@pytest.mark.parametrize(("per_channel", "bits"), [(False, 4), (True, 4), (False, 8)])
def test_tflite_file_holds_exactly_the_grid(data, tmp_path, per_channel, bits):
    if per_channel:  # convolutions: one step per output channel
        model, x = _cnn(), data
    else:  # Dense: TFLite's FULLY_CONNECTED takes one step per tensor
        model = keras.Sequential(
            [
                keras.Input((12,)),
                keras.layers.Dense(16, activation="relu", name="fc"),
                keras.layers.Dense(5, name="logits"),
            ]
        )
        x = data.reshape(160, -1)[:, :12]
    quant = tfc.oneshot.quantize(
        model,
        x,
        bits=bits,
        per_channel=per_channel,
        layers=["Conv2D", "DepthwiseConv2D"] if per_channel else None,
        verbose=0,
    )
    path = tmp_path / "gptq.tflite"
    report = tfc.tflite_export.export(quant, path, quantization="int8", verify_data=x, verbose=0)
    assert report.verified and report.top1_agreement >= 0.95
    stored, types = _file_kernels(path), _stored_types(path)
    names = ["conv", "dw"] if per_channel else ["fc", "logits"]
    for name in names:
        expected = _keras_kernel_as_stored(quant.get_layer(name))
        integers, dequantized = stored[expected.shape]
        assert np.abs(integers).max() <= 2 ** (bits - 1) - 1
        np.testing.assert_array_equal(dequantized, expected)
        # the converter packs a 4-bit grid into INT4 tensors
        assert types[expected.shape] == ("INT4" if bits == 4 else "INT8")


def test_keras_file_round_trip(data, tmp_path):
    quant = tfc.oneshot.compress(_cnn(), data, sparsity=0.5, bits=4, per_channel=False, verbose=0)
    path = tmp_path / "both.keras"
    quant.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(data, verbose=0), quant.predict(data, verbose=0))
    kernel = loaded.get_layer("fc").kernel
    mask = kernel.constraint.value()
    assert mask.mean() == pytest.approx(0.5, abs=0.01)
    assert np.all(kernel.numpy()[mask == 0] == 0)
    np.testing.assert_array_equal(mask, quant.get_layer("fc").kernel.constraint.value())


def test_compress_prunes_and_quantizes_and_exports(data, tmp_path):
    model = _cnn()
    both, report = tfc.oneshot.compress(
        model, data, sparsity=0.5, bits=4, per_channel=False, verbose=0, return_report=True
    )
    for name in ("conv", "fc", "logits"):
        layer = both.get_layer(name)
        mask = layer.kernel.constraint.value()
        assert mask.mean() == pytest.approx(0.5, abs=0.01)
        assert np.all(layer.kernel.numpy()[mask == 0] == 0)
        assert report.layer(name).error < report.layer(name).baseline_error
    path = tmp_path / "both.tflite"
    exported = tfc.tflite_export.export(
        both, path, quantization="int8", verify_data=data, verbose=0
    )
    assert exported.verified
    for name in ("conv", "fc", "logits"):
        expected = _keras_kernel_as_stored(both.get_layer(name))
        integers, dequantized = _file_kernels(path)[expected.shape]
        np.testing.assert_array_equal(dequantized, expected)
        assert np.mean(integers == 0) >= 0.5


def test_pruned_model_exports_to_sparse_int8(data, tmp_path):
    pruned = tfc.oneshot.prune(_cnn(), data, sparsity=0.7, verbose=0)
    report = tfc.tflite_export.export(
        pruned, tmp_path / "pruned.tflite", quantization="int8", representative_data=data, verbose=0
    )
    assert report.verified and report.top1_agreement >= 0.9
    assert report.weight_sparsity >= 0.6


def test_attention_projections_keep_float_kernels_on_the_grid():
    tokens = keras.Input((6, 8))
    h = keras.layers.MultiHeadAttention(2, 4, name="attn")(tokens, tokens)
    model = keras.Model(tokens, keras.layers.Dense(5, name="proj")(h))
    x = np.random.default_rng(1).normal(size=(32, 6, 8)).astype("float32")
    quant, report = tfc.oneshot.quantize(
        model, x, bits=4, layers=["MultiHeadAttention", "Dense"], verbose=0, return_report=True
    )
    assert report.layer("query").carrier == "float weights on the grid"
    assert report.layer("proj").carrier == "QuantDense"
    assert any("EinsumDense" in n or "no Quant layer" in n for n in report.notes)
    kernel = quant.get_layer("attn")._query_dense.kernel.numpy().reshape(8, -1)  # (in, heads*size)
    steps = np.abs(kernel).max(axis=0) / 7
    np.testing.assert_allclose(kernel / steps, np.round(kernel / steps), atol=1e-3)


def test_group_size_keeps_float_kernels_and_one_step_per_group(data):
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(4, name="d")])
    x = data.reshape(160, -1)[:, :16]
    quant, report = tfc.oneshot.quantize(
        model, x, bits=3, group_size=8, verbose=0, return_report=True
    )
    layer = quant.get_layer("d")
    assert type(layer) is keras.layers.Dense
    kernel = layer.kernel.numpy()
    for group in (kernel[:8], kernel[8:]):
        steps = np.abs(group).max(axis=0) / 3
        np.testing.assert_allclose(group / steps, np.round(group / steps), atol=1e-3)
    assert report.notes and "group_size" in report.notes[0]


def test_weight_only_quantization_has_no_activation_ranges(data):
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(4, name="d")])
    x = data.reshape(160, -1)[:, :12]
    quant = tfc.oneshot.quantize(model, x, bits=4, activations=False, verbose=0)
    layer = quant.get_layer("d")
    assert layer.input_quantizer is None and layer.activation_quantizer is None
    kernel = keras.ops.convert_to_numpy(layer.quantized_kernel())
    expected = x @ kernel + layer.bias.numpy()
    np.testing.assert_allclose(quant.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)


def test_batch_norm_is_folded_before_gptq(data):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            keras.layers.Conv2D(4, 3, use_bias=False, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, name="out"),
        ]
    )
    bn = model.get_layer("bn")
    bn.set_weights([w + np.linspace(0.5, 1.5, w.size).astype("float32") for w in bn.get_weights()])
    quant = tfc.oneshot.quantize(model, data, bits=4, per_channel=False, verbose=0)
    conv = quant.get_layer("conv")
    assert type(quant.get_layer("bn")).__name__ == "FoldedBatchNorm"
    step = conv.quantizer_state["kernel"]["step"].numpy()
    levels = conv.kernel.numpy() / step
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
    reference = model.predict(data, verbose=0)
    error = np.abs(quant.predict(data, verbose=0) - reference).max()
    assert error < 0.1 * np.abs(reference).max()
