"""compact_model: separable / flattened / fire blocks, exactness, shapes, costs, fine-tune, export."""

import itertools

import keras
import numpy as np
import pytest

from tfcompress.compact.blocks import BLOCK_KINDS, ConvSpec
from tfcompress.compact.decompose import compose_flattened, cp_als
from tfcompress.compact.replace import CompactReport, compact_model
from tfcompress.core.walk import walk_layers


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _tiny(strides=2, padding="valid", use_bias=True, seed=0):
    """8x8x3 -> 3x3 conv (same) -> 3x3 conv (strides, padding) -> 1x1 conv -> logits."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(
        6, 3, strides=strides, padding=padding, use_bias=use_bias, name="conv2"
    )(x)
    x = keras.layers.Conv2D(4, 1, activation="relu", name="point")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(5, name="logits")(x)
    return keras.Model(inputs, outputs, name="tiny")


def _x(n=16, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 8, 8, 3)).astype("float32")


def _predict(model, x):
    return _numpy(model(x, training=False))


# --- exactness --------------------------------------------------------------
def test_separable_at_full_rank_reproduces_the_model():
    model = _tiny()
    before = [_numpy(w).copy() for w in model.weights]
    small, report = compact_model(model, "separable", rank=9, return_report=True, verbose=0)
    np.testing.assert_allclose(_predict(small, _x()), _predict(model, _x()), atol=1e-4)
    for old, new in zip(before, model.weights):  # the original is untouched
        np.testing.assert_array_equal(old, _numpy(new))
    assert isinstance(report, CompactReport)
    assert [x.name for x in report.layers] == ["conv1", "conv2"]
    # rank is lowered to min(K*K, cout): 8 for conv1 (cout 8), 6 for conv2 (cout 6).
    assert [x.config for x in report.layers] == ["rank=8", "rank=6"]
    assert all(x.kernel_error < 1e-6 and x.output_error < 1e-5 for x in report.layers)
    assert report.skipped == [("point", "Conv2D", "a 1x1 convolution (nothing spatial to factor)")]
    block = small.get_layer("conv2")
    assert [type(x).__name__ for x in block.layers[1:]] == ["DepthwiseConv2D", "Conv2D"]
    # Kept layers keep their weights.
    np.testing.assert_array_equal(
        _numpy(small.get_layer("point").kernel), _numpy(model.get_layer("point").kernel)
    )


def test_flattened_reproduces_a_kernel_that_is_rank_one_per_filter():
    model = _tiny(strides=1, padding="same")
    rng = np.random.default_rng(3)
    for name in ("conv1", "conv2"):
        layer = model.get_layer(name)
        kh, kw, cin, cout = layer.kernel.shape
        a, b, c = (rng.standard_normal((cout, n, 1)) for n in (cin, kh, kw))
        layer.kernel.assign(compose_flattened(a, b, c).astype("float32"))
    small, report = compact_model(model, "flattened", return_report=True, verbose=0)
    np.testing.assert_allclose(_predict(small, _x()), _predict(model, _x()), atol=1e-4)
    assert all(x.kernel_error < 1e-5 for x in report.layers), report
    names = [type(x).__name__ for x in small.get_layer("conv2").layers[1:]]
    assert names == ["Conv2D", "DepthwiseConv2D", "DepthwiseConv2D"]


def test_cp_als_error_falls_with_rank_and_is_exact_at_full_rank():
    kernel = np.random.default_rng(0).standard_normal((3, 3, 4, 5))
    errors = []
    for rank in (1, 2, 4, 9):
        a, b, c = cp_als(kernel, rank, iterations=200)
        errors.append(np.linalg.norm(kernel - compose_flattened(a, b, c)) / np.linalg.norm(kernel))
    assert errors == sorted(errors, reverse=True) and errors[0] < 1.0
    assert errors[-1] < 1e-3  # rank 9 >= the rank of any 3x3x4 tensor's 3x(12) unfolding


def test_fire_with_full_squeeze_and_only_kxk_expand_is_exact():
    model = _tiny()
    small, report = compact_model(
        model, "fire", ["conv1"], squeeze_ratio=1.0, kxk_fraction=1.0, return_report=True,
        verbose=0,
    )  # fmt: skip
    # squeeze = min(cout, cin) = cin: the squeeze is a rotation of the input channels.
    assert report.layers[0].config == "squeeze=3, e1=0, e3=8"
    np.testing.assert_allclose(_predict(small, _x()), _predict(model, _x()), atol=1e-4)


def test_fire_reports_finite_errors_and_its_centre_tap_loss():
    model = _tiny()
    small, report = compact_model(model, "fire", return_report=True, verbose=0)
    first = report.layers[0]
    assert first.config == "squeeze=2, e1=4, e3=4"  # round(0.25 * 8), 8 - round(0.5 * 8)
    for entry in report.layers:
        assert np.isfinite(entry.kernel_error) and 0 < entry.kernel_error < 1
        assert np.isfinite(entry.output_error) and 0 < entry.output_error < 1.5
    # The kernel error is at least the off-centre taps of the 1x1-expand channels.
    kernel = _numpy(model.get_layer("conv1").kernel).astype(np.float64)
    off_centre = kernel[:, :, :, :4].copy()
    off_centre[1, 1] = 0
    assert first.kernel_error >= np.linalg.norm(off_centre) / np.linalg.norm(kernel) - 1e-9
    assert small.get_layer("conv1").output.shape == model.get_layer("conv1").output.shape
    text = str(report)
    assert "compact_model (fire)" in text and "squeeze=2, e1=4, e3=4" in text
    assert "point (Conv2D): a 1x1 convolution" in text


# --- geometry -----------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(BLOCK_KINDS))
@pytest.mark.parametrize("strides, padding", [(2, "same"), (2, "valid"), (1, "valid")])
def test_blocks_keep_output_shapes(kind, strides, padding):
    model = _tiny(strides=strides, padding=padding)
    knobs = {"fire": {}}.get(kind, {"rank": 2})
    small, report = compact_model(model, kind, return_report=True, verbose=0, **knobs)
    for name in ("conv1", "conv2"):
        assert small.get_layer(name).output.shape == model.get_layer(name).output.shape
    assert small.output.shape == model.output.shape
    assert all(np.isfinite(x.output_error) for x in report.layers)
    assert _predict(small, _x()).shape == (16, 5)


def test_every_block_computes_a_conv_with_its_composed_kernel():
    """Block output == conv(x, composed kernel) + bias for strides, dilation, odd/even K."""
    rng = np.random.default_rng(0)
    geometries = [
        ((3, 3), (2, 2), (1, 1), "same", (9, 8)),
        ((3, 2), (2, 1), (1, 1), "valid", (8, 7)),
        ((2, 2), (1, 1), (2, 2), "same", (8, 8)),
        ((1, 3), (1, 2), (1, 1), "same", (None, None)),
        ((4, 4), (3, 3), (1, 1), "same", (10, 11)),
    ]
    for (k, s, d, padding, hw), (name, kind) in itertools.product(geometries, BLOCK_KINDS.items()):
        layer = keras.layers.Conv2D(5, k, strides=s, dilation_rate=d, padding=padding)
        layer(keras.Input((*hw, 4)))
        spec = ConvSpec.from_layer(layer)
        if kind.unsupported(spec):
            # Strided 'same' of unknown size (fire; flattened pads explicitly when strided), or
            # unequal strides (TensorFlow's CPU depthwise kernel needs equal ones without oneDNN).
            unknown = hw == (None, None) and name in ("fire", "flattened")
            assert unknown or (s[0] != s[1] and name in ("separable", "flattened")), (name, s)
            continue
        kernel, bias = _numpy(layer.kernel).astype(np.float64), rng.standard_normal(5)
        knobs = {"rank": 2, "squeeze_ratio": 0.6, "kxk_fraction": 0.4}
        plan = kind.plan(kernel, bias, spec, knobs)
        block = kind.build(spec, plan, None, {})
        for sub, arrays in plan.weights.items():
            block.get_layer(sub).set_weights([a.astype("float32") for a in arrays])
        x = rng.standard_normal((2, hw[0] or 9, hw[1] or 10, 4)).astype("float32")
        expected = keras.ops.conv(
            x, plan.composed.astype("float32"), strides=s, padding=padding, dilation_rate=d
        )
        got = _numpy(block(x))
        assert got.shape == tuple(expected.shape), (k, s, d, padding, name)
        np.testing.assert_allclose(got, _numpy(expected) + bias, atol=1e-4, err_msg=f"{name} {k}")


# --- cost ---------------------------------------------------------------------
@pytest.mark.parametrize("use_bias", [True, False])
def test_parameter_and_mac_counts_match_formulas(use_bias):
    model = _tiny(strides=2, padding="same", use_bias=use_bias)
    cin, cout, kk = 8, 6, 9  # conv2
    out_hw = 4 * 4  # 8x8, stride 2, 'same'
    bias = cout if use_bias else 0
    expected = {
        "separable": (
            kk * cin * 2 + cin * 2 * cout + bias,
            out_hw * (kk * cin * 2 + cin * 2 * cout),
        ),
        # Strided: padded to 9x9 ('same', stride 2 on 8 pads 0 before and 1 after), the vertical
        # stage runs at stride 1 ('valid': 7 rows x 9 columns), the horizontal one takes (2, 2).
        "flattened": (
            2 * cout * (cin + 3 + 3) + bias,
            2 * (64 * cin * cout + 7 * 9 * 3 * cout + out_hw * 3 * cout),
        ),
        # squeeze s = round(0.25 * 6) = 2, e3 = round(0.5 * 6) = 3, e1 = 3.
        "fire": (cin * 2 + 2 * 3 + kk * 2 * 3 + bias, 64 * cin * 2 + out_hw * (2 * 3 + kk * 2 * 3)),
    }
    for kind, (params, macs) in expected.items():
        knobs = {} if kind == "fire" else {"rank": 2}
        small, report = compact_model(
            model, kind, layers=["conv2"], return_report=True, verbose=0, **knobs
        )
        (entry,) = report.layers
        assert entry.params_before == kk * cin * cout + bias
        assert entry.macs_before == out_hw * kk * cin * cout
        assert entry.params_after == small.get_layer("conv2").count_params() == params, kind
        assert entry.macs_after == macs, kind
        assert report.params_after == small.count_params()
        assert report.params_before - report.params_after == entry.params_before - params


# --- fine-tune, export, saving ---------------------------------------------------
def _kl(teacher_logits, student_logits):
    t = keras.ops.softmax(teacher_logits)
    s = keras.ops.log_softmax(student_logits)
    return float(np.mean(np.sum(_numpy(t) * (np.log(_numpy(t) + 1e-12) - _numpy(s)), -1)))


def test_fine_tune_with_the_original_as_teacher_lowers_the_gap():
    model = _tiny()
    x = _x(64, seed=5)
    y = np.argmax(_predict(model, x), axis=-1)
    plain = compact_model(model, "separable", rank=1, verbose=0)
    tuned, report = compact_model(
        model, "separable", rank=1, data=(x, y), epochs=1, batch_size=16, teacher_weight=1.0,
        learning_rate=1e-2, return_report=True, verbose=0,
    )  # fmt: skip
    teacher = _predict(model, x)
    before, after = _kl(teacher, _predict(plain, x)), _kl(teacher, _predict(tuned, x))
    assert after < before, (before, after)
    assert len(report.fine_tune_loss) == 1 and np.isfinite(report.fine_tune_loss[0])
    assert "fine-tune loss per epoch" in str(report)
    # The teacher callback has put the student's compute_loss back.
    assert "compute_loss" not in tuned.__dict__


def test_nested_model_and_a_dataset_fine_tune():
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inner_in = keras.Input((8, 8, 4))
    inner = keras.Model(
        inner_in, keras.layers.Conv2D(4, 3, padding="same", name="ic")(inner_in), name="inner"
    )
    inputs = keras.Input((8, 8, 3))
    x = inner(keras.layers.Conv2D(4, 3, padding="same", name="c")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = tf.data.Dataset.from_tensor_slices((_x(16), np.arange(16) % 3)).batch(8)
    small, report = compact_model(
        model, "flattened", rank=2, data=data, epochs=2, return_report=True, verbose=0
    )
    assert [x.name for x in report.layers] == ["c", "inner/ic"]
    assert len(report.fine_tune_loss) == 2 and all(np.isfinite(report.fine_tune_loss))
    assert isinstance(small.get_layer("inner").get_layer("ic"), keras.Model)
    assert small.loss is model.loss  # the original's compiled loss is reused


@pytest.mark.parametrize("kind", sorted(BLOCK_KINDS))
def test_exports_to_tflite_and_agrees_with_keras(kind, tmp_path):
    from tfcompress.export.tflite import export

    model = _tiny(strides=2, padding="same")
    knobs = {} if kind == "fire" else {"rank": 2}
    small = compact_model(model, kind, verbose=0, **knobs)
    report = export(small, str(tmp_path / f"{kind}.tflite"), verify_data=_x(8), verbose=0)
    assert report.verified, report
    assert report.max_abs_diff < 1e-4


def test_keras_round_trip_of_a_sequential_model_with_stock_layers_only(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="a"),
            keras.layers.Conv2D(6, (3, 2), padding="same", name="b"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ],
        name="seq",
    )
    for kind, knobs in (("flattened", {"rank": 2}), ("fire", {"squeeze_ratio": 0.5})):
        small = compact_model(model, kind, verbose=0, **knobs)
        modules = {type(x).__module__ for _, x in walk_layers(small, models=True)}
        assert all(m.startswith("keras.") for m in modules), modules
        path = tmp_path / f"{kind}.keras"
        small.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        np.testing.assert_allclose(_predict(loaded, _x()), _predict(small, _x()), atol=1e-6)


# --- errors -----------------------------------------------------------------------
def test_errors_name_the_argument_and_leave_nothing_half_done():
    model = _tiny()
    with pytest.raises(ValueError, match=r"kind must be one of .*got kind='depthwise'"):
        compact_model(model, "depthwise")
    with pytest.raises(ValueError, match=r"rank must be >= 1, got rank=0"):
        compact_model(model, "separable", rank=0)
    with pytest.raises(TypeError, match=r"rank must be an int >= 1, got 1.5"):
        compact_model(model, "flattened", rank=1.5)
    with pytest.raises(ValueError, match=r"rank=2 does not apply to kind='fire'.*squeeze_ratio"):
        compact_model(model, "fire", rank=2)
    with pytest.raises(ValueError, match=r"squeeze_ratio must be .*\(0, 1\].*got squeeze_ratio=0"):
        compact_model(model, "fire", squeeze_ratio=0)
    with pytest.raises(ValueError, match=r"kxk_fraction must be .*got kxk_fraction=2"):
        compact_model(model, "fire", kxk_fraction=2)
    with pytest.raises(ValueError, match=r"layer 'point' cannot be replaced .*a 1x1 convolution"):
        compact_model(model, "separable", layers=["conv1", "point"])
    with pytest.raises(TypeError, match=r"layer 'logits' cannot be replaced .*a Dense, not a"):
        compact_model(model, "separable", layers="logits")
    with pytest.raises(ValueError, match=r"no layer named .*'nope'"):
        compact_model(model, "separable", layers=["nope"])
    with pytest.raises(TypeError, match=r"data must be None, a pair \(x, y\)"):
        compact_model(model, "separable", data=_x())
    with pytest.raises(
        ValueError, match=r"teacher_weight must be in \[0, 1\], got teacher_weight=2"
    ):
        compact_model(model, "separable", data=(_x(), np.zeros(16)), teacher_weight=2)
    with pytest.raises(ValueError, match=r"epochs must be an int >= 1, got epochs=0"):
        compact_model(model, "separable", data=(_x(), np.zeros(16)), epochs=0)

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 1, name="pw")(inputs)
    x = keras.layers.Conv2D(4, 3, groups=2, name="grouped")(x)
    flat = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    with pytest.raises(ValueError, match=r"found no convolution to replace.*grouped: a grouped"):
        compact_model(flat, "fire")


def test_fire_refuses_strided_same_convs_of_unknown_size():
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="strided")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", name="plain")(x)
    model = keras.Model(inputs, x)
    with pytest.raises(ValueError, match=r"'strided' cannot be replaced .*depends on the input"):
        compact_model(model, "fire", layers=["strided"])
    small, report = compact_model(model, "fire", return_report=True, verbose=0)
    assert [x.name for x in report.layers] == ["plain"]
    assert report.skipped[0][0] == "strided"
    assert report.layers[0].macs_before is None  # unknown spatial size
    # Separable handles it (TensorFlow's 'same' padding is per axis); flattened pads its
    # strided stages explicitly, so it needs the size too.
    small = compact_model(model, "separable", verbose=0)
    x = np.random.default_rng(0).standard_normal((1, 9, 7, 3)).astype("float32")
    assert small(x).shape == model(x).shape == (1, 5, 4, 4)
    small, report = compact_model(model, "flattened", return_report=True, verbose=0)
    assert [x.name for x in report.layers] == ["plain"]
    assert report.skipped[0][0] == "strided" and "unknown" in report.skipped[0][2]
