"""TransferredConv2D: shared layer checks, the kernel against NumPy, equivariance, projection,
to_transferred, TFLite export and errors."""

import inspect

import keras
import numpy as np
import pytest
from layer_checks import check_layer

from tfcompress.compact.transferred import (
    GROUPS,
    TransferredConv2D,
    project_kernel,
    transfer_kernel,
)
from tfcompress.compact.transferred_convert import to_transferred


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _rot(w, k):
    return np.rot90(w, k, axes=(0, 1))


# Hand-written reference: the transforms of one (kh, kw, ...) filter, in filter order.
REFERENCE = {
    "rotations": lambda w: [w, _rot(w, 1), _rot(w, 2), _rot(w, 3)],
    "flips": lambda w: [w, w[:, ::-1]],
    "flips2": lambda w: [w, w[:, ::-1], w[::-1, :], w[::-1, ::-1]],
    "d4": lambda w: [_rot(w, k) for k in range(4)] + [_rot(w[:, ::-1], k) for k in range(4)],
}


def _reference_kernel(base, group):
    filters = []
    for b in range(base.shape[-1]):
        filters += REFERENCE[group](base[..., b])
    return np.stack(filters, axis=-1)


# --- shared checks ------------------------------------------------------------
@pytest.mark.jax
@pytest.mark.parametrize(
    "group, kernel_size, kwargs",
    [
        ("rotations", 3, {"padding": "same", "activation": "relu"}),
        ("flips", 3, {"strides": 2, "bias_initializer": "random_normal"}),
        ("flips2", (3, 5), {"use_bias": False, "dilation_rate": (1, 2)}),
        ("d4", 2, {"padding": "same", "kernel_regularizer": "l2"}),
    ],
)
def test_layer_checks(tmp_path, group, kernel_size, kwargs):
    check_layer(
        lambda: TransferredConv2D(8, kernel_size, group=group, **kwargs),
        (2, 7, 9, 3),
        tmp_path,
        atol=1e-5,
    )


def test_signature_matches_conv2d():
    def params(cls, skip):
        return {
            name: p.default
            for name, p in inspect.signature(cls.__init__).parameters.items()
            if name not in skip
        }

    assert params(TransferredConv2D, {"self", "group"}) == params(keras.layers.Conv2D, {"self"})
    assert inspect.signature(TransferredConv2D).parameters["group"].default == "rotations"


# --- the kernel, against NumPy -------------------------------------------------
@pytest.mark.jax
@pytest.mark.parametrize("group", sorted(GROUPS))
def test_kernel_and_outputs_match_numpy_and_conv2d(group):
    size = GROUPS[group].size
    kernel_size = (3, 5) if group in ("flips", "flips2") else (3, 3)
    layer = TransferredConv2D(
        2 * size, kernel_size, padding="same", group=group, bias_initializer="random_normal"
    )
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype("float32")
    got = _numpy(layer(x))
    base = _numpy(layer.base_kernel)
    assert base.shape == (*kernel_size, 3, 2)
    assert _numpy(layer.bias).shape == (2,)
    expected_kernel = _reference_kernel(base, group)
    np.testing.assert_array_equal(transfer_kernel(base, group), expected_kernel)
    np.testing.assert_array_equal(_numpy(layer.transferred_kernel()), expected_kernel)
    np.testing.assert_array_equal(layer.effective_kernel(), expected_kernel)

    conv = keras.layers.Conv2D(2 * size, kernel_size, padding="same")
    conv.build(x.shape)
    conv.set_weights([expected_kernel, np.repeat(_numpy(layer.bias), size)])
    np.testing.assert_allclose(got, _numpy(conv(x)), atol=1e-5)
    assert layer.compression_stats() == {
        "params": base.size + 2,
        "macs": int(np.prod(kernel_size)) * 3 * 2 * size * 64,
    }


# --- equivariance ---------------------------------------------------------------
@pytest.mark.jax
def test_rotating_the_input_rotates_the_output_and_cycles_each_block():
    layer = TransferredConv2D(8, 3, padding="same", bias_initializer="random_normal")
    x = np.random.default_rng(1).standard_normal((2, 9, 9, 3)).astype("float32")
    y = _numpy(layer(x))
    y_rotated_input = _numpy(layer(np.ascontiguousarray(np.rot90(x, 1, axes=(1, 2)))))
    # Filter (b, g) of the rotated input = filter (b, g - 1) of the input, rotated.
    cycle = [4 * (j // 4) + (j - 1) % 4 for j in range(8)]
    expected = np.rot90(y, 1, axes=(1, 2))[..., cycle]
    np.testing.assert_allclose(y_rotated_input, expected, atol=1e-5)
    assert not np.allclose(y_rotated_input, np.rot90(y, 1, axes=(1, 2)), atol=1e-3)


@pytest.mark.jax
def test_flipping_the_input_flips_the_output_and_swaps_each_pair():
    layer = TransferredConv2D(6, 3, padding="same", group="flips")
    x = np.random.default_rng(2).standard_normal((1, 6, 7, 2)).astype("float32")
    y = _numpy(layer(x))
    y_flipped_input = _numpy(layer(np.ascontiguousarray(x[:, :, ::-1])))
    np.testing.assert_allclose(y_flipped_input, y[:, :, ::-1][..., [1, 0, 3, 2, 5, 4]], atol=1e-5)


# --- projection of a trained kernel ---------------------------------------------
@pytest.mark.jax
@pytest.mark.parametrize("group", sorted(GROUPS))
def test_projection_is_the_least_squares_base(group):
    rng = np.random.default_rng(3)
    size = GROUPS[group].size
    w = rng.standard_normal((3, 3, 2, 2 * size))
    base = project_kernel(w, group)
    assert base.shape == (3, 3, 2, 2)
    # Exact on a structured kernel.
    np.testing.assert_allclose(project_kernel(transfer_kernel(base, group), group), base)
    # The residual is orthogonal to every structured kernel (normal equations).
    residual = w - transfer_kernel(base, group)
    for i in range(base.size):
        direction = np.zeros(base.size)
        direction[i] = 1.0
        structured = transfer_kernel(direction.reshape(base.shape), group)
        assert abs(np.sum(residual * structured)) < 1e-10
    layer = TransferredConv2D(2 * size, 3, group=group)
    layer.build((None, 5, 5, 2))
    error = layer.set_kernel(w, bias=np.arange(2 * size, dtype="float32"))
    assert error == pytest.approx(np.linalg.norm(residual) / np.linalg.norm(w), rel=1e-6)
    np.testing.assert_allclose(_numpy(layer.base_kernel), base, rtol=1e-6, atol=1e-6)
    expected_bias = np.arange(2 * size).reshape(2, size).mean(axis=1)
    np.testing.assert_allclose(_numpy(layer.bias), expected_bias)


def test_to_transferred_copies_the_configuration_in_nested_models():
    conv = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="c")
    inner = keras.Sequential([keras.Input((8, 8, 2)), conv], name="inner")
    outer = keras.Sequential([keras.Input((8, 8, 2)), inner, keras.layers.Flatten()])
    new, report = to_transferred(outer, group="flips2", return_report=True, verbose=0)
    layer = new.get_layer("inner").get_layer("c")
    assert isinstance(layer, TransferredConv2D)
    assert (layer.filters, layer.strides, layer.group) == (4, (2, 2), "flips2")
    assert layer.activation is keras.activations.relu
    assert report.converted[0].name == "inner/c" and 0 < report.converted[0].relative_error < 1


def _model():
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", name="c2")(x)  # 6 is not a multiple of 4
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def test_to_transferred_converts_keeps_the_original_and_reports_errors():
    model = _model()
    rng = np.random.default_rng(4)
    c1 = model.get_layer("c1")
    structured = transfer_kernel(rng.standard_normal((3, 3, 2, 2)), "rotations")
    c1.set_weights([structured.astype("float32"), np.repeat([0.5, -0.5], 4).astype("float32")])
    before = [w.copy() for w in model.get_weights()]
    x = rng.standard_normal((2, 8, 8, 2)).astype("float32")

    new, report = to_transferred(model, "rotations", return_report=True, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert isinstance(new.get_layer("c1"), TransferredConv2D)
    assert type(new.get_layer("c2")) is keras.layers.Conv2D
    assert [s[0] for s in report.skipped] == ["c2"] and "divisible" in report.skipped[0][2]
    [layer] = report.converted
    assert (layer.name, layer.params_before, layer.params_after) == ("c1", 152, 38)
    assert layer.relative_error < 1e-6 and layer.bias_relative_error == 0.0
    assert report.params_before - report.params_after == 152 - 38
    # A kernel that already has the structure converts exactly.
    np.testing.assert_allclose(_numpy(new(x)), _numpy(model(x)), atol=1e-5)
    assert "c1" in report.to_string()

    # A trained (random) kernel: the reported error is the projection's.
    _, report = to_transferred(model, "flips", layers=["c2"], return_report=True, verbose=0)
    w = _numpy(model.get_layer("c2").kernel).astype(np.float64)
    residual = w - transfer_kernel(project_kernel(w, "flips"), "flips")
    expected = np.linalg.norm(residual) / np.linalg.norm(w)
    assert report.converted[0].relative_error == pytest.approx(expected, rel=1e-5)


def test_to_transferred_errors_leave_the_model_untouched():
    model = _model()
    names = [layer.name for layer in model.layers]
    with pytest.raises(ValueError, match=r"layers: cannot convert layer 'c2'.*filters=6"):
        to_transferred(model, "rotations", layers=["c1", "c2"], verbose=0)
    six = keras.Sequential([keras.Input((5, 5, 1)), keras.layers.Conv2D(6, 3, name="c6")])
    with pytest.raises(ValueError, match=r"found no layer to convert \(c6: filters must"):
        to_transferred(six, "d4", verbose=0)
    with pytest.raises(ValueError, match=r"layers: cannot convert layer .head.*not keras.layers"):
        to_transferred(model, "flips", layers="head", verbose=0)
    with pytest.raises(ValueError, match=r"group must be one of .*got 'c8'"):
        to_transferred(model, "c8", verbose=0)
    assert [layer.name for layer in model.layers] == names
    assert type(model.get_layer("c1")) is keras.layers.Conv2D


# --- export -----------------------------------------------------------------------
def test_tflite_export_is_one_plain_conv2d(tmp_path):
    from tfcompress.export.interpreter import TFLiteModel
    from tfcompress.export.tflite import export

    inputs = keras.Input((9, 9, 3))
    x = TransferredConv2D(16, 3, padding="same", activation="relu", group="d4")(inputs)
    model = keras.Model(inputs, TransferredConv2D(8, 3, strides=2, group="flips2")(x))
    data = np.random.default_rng(5).standard_normal((8, 9, 9, 3)).astype("float32")
    report = export(model, tmp_path / "t.tflite", quantization=None, verify_data=data, verbose=0)
    assert report.verified and report.max_abs_diff < 1e-5
    assert report.op_counts == {"CONV_2D[float32]": 2}
    ops = [op.name for op in TFLiteModel(str(tmp_path / "t.tflite")).ops()]
    assert ops == ["CONV_2D", "CONV_2D"]
    # The folded file stores the full kernels, as a Conv2D's does.
    assert report.bytes > 4 * (3 * 3 * 3 * 16 + 3 * 3 * 16 * 8)


# --- errors -------------------------------------------------------------------------
@pytest.mark.jax
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"filters": 6}, r"filters must be divisible by the size of group 'rotations' \(4\), got "
                         r"filters=6"),
        ({"filters": 12, "group": "d4"}, r"group 'd4' \(8\), got filters=12"),
        ({"kernel_size": (3, 5)}, r"group 'rotations' .* square kernel, got kernel_size=\(3, 5\)"),
        ({"kernel_size": (3, 5), "group": "d4"}, "square kernel"),
        ({"group": "c8"}, r"group must be one of \['d4', 'flips', 'flips2', 'rotations'\], got "
                          r"'c8'"),
        ({"data_format": "channels_first"}, "data_format must be 'channels_last'"),
        ({"groups": 2}, "groups=1 only, got groups=2"),
        ({"padding": "causal"}, "padding must be 'valid' or 'same', got 'causal'"),
        ({"filters": 0}, "filters must be a positive int, got 0"),
    ],
)  # fmt: skip
def test_errors_name_the_argument_and_value(kwargs, message):
    arguments = {"filters": 8, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        TransferredConv2D(**arguments)


@pytest.mark.jax
def test_non_square_kernels_work_with_flips():
    layer = TransferredConv2D(4, (3, 5), group="flips2")
    assert layer(np.zeros((1, 6, 6, 2), "float32")).shape == (1, 4, 2, 4)


def test_mixed_float16(tmp_path):
    check_layer(
        lambda: TransferredConv2D(4, 3, padding="same", group="flips2"),
        (2, 6, 6, 3),
        tmp_path,
        atol=1e-2,
        dtype_policy="mixed_float16",
    )


def test_tflite_int8_export(tmp_path):
    from tfcompress.export.tflite import export

    inputs = keras.Input((8, 8, 2))
    x = TransferredConv2D(8, 3, padding="same", activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    data = np.random.default_rng(6).uniform(size=(32, 8, 8, 2)).astype("float32")
    report = export(
        model, tmp_path / "q.tflite", quantization="int8", representative_data=data, verbose=0
    )
    assert report.verified and report.op_counts.get("CONV_2D[int8]") == 1, report.op_counts
