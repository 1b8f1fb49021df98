"""factorize_model: rank modes, skipped layers, TFLite op types, int8 export, errors."""

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.core.walk import walk_layers
from tfcompress.layers import LowRankConv2D, LowRankDense
from tfcompress.lowrank import decompositions as lr
from tfcompress.models import accuracy, train_classifier


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _small_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2D(24, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64, activation="relu", name="dense1")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="small")


def _weights(model):
    return [_numpy(w).copy() for w in model.weights]


def test_fixed_rank_initialises_from_the_truncated_svd():
    model = _small_model()
    before = _weights(model)
    small, report = tfc.factorize_model(model, rank=6, return_report=True, verbose=0)
    # The user's model is untouched.
    for old, new in zip(before, _weights(model)):
        np.testing.assert_array_equal(old, new)
    assert isinstance(small.get_layer("dense1"), LowRankDense)
    assert isinstance(small.get_layer("conv2"), LowRankConv2D)
    assert small.get_layer("dense1").rank == 6
    w = _numpy(model.get_layer("dense1").kernel).astype(np.float64)
    s = np.linalg.svd(w, compute_uv=False)
    effective = _numpy(small.get_layer("dense1").kernel)
    np.testing.assert_allclose(np.sum((w - effective) ** 2), np.sum(s[6:] ** 2), rtol=1e-3)
    np.testing.assert_array_equal(
        _numpy(small.get_layer("dense1").bias), _numpy(model.get_layer("dense1").bias)
    )
    # BatchNorm weights are copied.
    for a, b in zip(model.get_layer("bn").weights, small.get_layer("bn").weights):
        np.testing.assert_array_equal(_numpy(a), _numpy(b))
    # conv1 is a (9, 16) matrix: rank 6 needs 6 * 25 = 150 >= 144 weights, so it stays.
    skipped = {name: why for name, _, why in report.skipped}
    assert "conv1" in skipped and "150 >= 144" in skipped["conv1"]
    assert type(small.get_layer("conv1")) is keras.layers.Conv2D
    assert report.params_after == small.count_params() < model.count_params()
    assert {f.name for f in report.factorized} == {"conv2", "dense1", "logits"}


def test_rank_at_or_above_min_dimension_is_skipped_and_reported():
    model = _small_model()
    small, report = tfc.factorize_model(model, rank=10, return_report=True, verbose=0)
    skipped = {name: why for name, _, why in report.skipped}
    assert skipped["logits"] == "rank 10 >= min(in, out) = 10"
    assert type(small.get_layer("logits")) is keras.layers.Dense


def test_rank_dict_selects_layers():
    model = _small_model()
    small = tfc.factorize_model(model, rank={"dense1": 5, "conv2": 7}, verbose=0)
    assert small.get_layer("dense1").rank == 5
    assert small.get_layer("conv2").rank == 7
    assert type(small.get_layer("logits")) is keras.layers.Dense


def test_energy_mode_keeps_the_requested_energy():
    model = _small_model()
    small, report = tfc.factorize_model(model, energy=0.8, return_report=True, verbose=0)
    for row in report.factorized:
        # relative error^2 = 1 - kept energy <= 0.2
        assert row.relative_error**2 <= 0.2 + 1e-6
        assert row.params_after < row.params_before
    w = _numpy(model.get_layer("dense1").kernel)
    expected = lr.energy_rank(np.linalg.svd(w, compute_uv=False), 0.8)
    assert small.get_layer("dense1").rank == expected


@pytest.mark.parametrize("ratio", [0.3, 0.6])
def test_target_ratio_meets_the_budget_with_least_total_error(ratio):
    model = _small_model()
    small, report = tfc.factorize_model(model, target_ratio=ratio, return_report=True, verbose=0)
    assert small.count_params() <= ratio * model.count_params()
    assert small.count_params() >= 0.9 * ratio * model.count_params()  # the budget is used
    # Uniform rank at no more parameters has at least the same total error.
    layers = [model.get_layer(f.name) for f in report.factorized]
    mats = [_numpy(x.kernel).reshape(-1, x.kernel.shape[-1]) for x in layers]
    spectra = [np.linalg.svd(m.astype(np.float64), compute_uv=False) for m in mats]
    tops = [lr.max_useful_rank(*m.shape) for m in mats]
    costs = [sum(m.shape) for m in mats]
    budget = sum(f.params_after for f in report.factorized)
    uniform = max(
        (lr.uniform_ranks(tops, r) for r in range(1, max(tops) + 1)),
        key=lambda ranks: (sum(r * c for r, c in zip(ranks, costs)) <= budget, sum(ranks)),
    )
    assert report.total_squared_error <= lr.total_tail_error(spectra, uniform) * (1 + 1e-4)


def test_nested_model_and_layer_selection_by_type():
    inner = keras.Sequential(
        [keras.Input((32,)), keras.layers.Dense(32, name="a"), keras.layers.Dense(32, name="b")],
        name="inner",
    )
    inputs = keras.Input((32,))
    outputs = keras.layers.Dense(4, name="head")(inner(inputs))
    model = keras.Model(inputs, outputs)
    small, report = tfc.factorize_model(
        model, rank=4, layers=keras.layers.Dense, return_report=True, verbose=0
    )
    assert {f.name for f in report.factorized} == {"inner/a", "inner/b"}
    x = np.random.default_rng(0).standard_normal((3, 32)).astype("float32")
    assert small(x).shape == (3, 4)
    by_name = tfc.factorize_model(model, rank={"a": 3, "inner/b": 5, "head": 2}, verbose=0)
    inner_copy = by_name.get_layer("inner")
    assert inner_copy.get_layer("a").rank == 3 and inner_copy.get_layer("b").rank == 5
    assert by_name.get_layer("head").rank == 2


def test_tflite_has_only_ordinary_ops_and_int8_works(tmp_path, digits):
    model = tfc.models.digits_cnn()
    small = tfc.factorize_model(model, target_ratio=0.5, verbose=0)
    original = tfc.tflite_export.export(model, tmp_path / "f.tflite", verbose=0)
    report = tfc.tflite_export.export(
        small, tmp_path / "lr.tflite", verify_data=digits.x_test, verbose=0
    )

    def kinds(counts):
        return {k.split("[")[0] for k in counts}

    assert kinds(report.op_counts) == kinds(original.op_counts)
    assert report.op_counts["CONV_2D[float32]"] == 6  # 3 conv layers x 2 factors
    assert report.op_counts["FULLY_CONNECTED[float32]"] == 4
    assert report.max_abs_diff < 1e-4 and report.top1_agreement == 1.0
    assert report.bytes < 0.6 * original.bytes

    int8 = tfc.tflite_export.export(
        small,
        tmp_path / "lr8.tflite",
        quantization="int8",
        representative_data=digits.x_train[:200],
        verify_data=digits.x_test,
        verbose=0,
    )
    assert int8.op_counts["CONV_2D[int8]"] == 6
    assert int8.op_counts["FULLY_CONNECTED[int8]"] == 4
    assert int8.top1_agreement >= 0.95
    assert int8.bytes < 0.35 * report.bytes


@pytest.mark.slow
def test_digits_cnn_at_half_parameters_recovers_after_fine_tuning(trained_digits_cnn, digits):
    float_acc = accuracy(trained_digits_cnn, digits.x_test, digits.y_test)
    keras.utils.set_random_seed(0)
    small = tfc.factorize_model(trained_digits_cnn, target_ratio=0.5, verbose=0)
    assert small.count_params() <= 0.5 * trained_digits_cnn.count_params()
    train_classifier(small, digits, epochs=3, learning_rate=5e-4)
    tuned = accuracy(small, digits.x_test, digits.y_test)
    assert tuned >= float_acc - 0.015, (float_acc, tuned)


# --- errors -----------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one of rank, energy or target_ratio, got none"),
        ({"rank": 2, "energy": 0.9}, "got rank, energy"),
        ({"rank": 0}, "rank must be >= 1, got rank=0"),
        ({"rank": {"dense1": -1}}, "rank must be >= 1, got dense1=-1"),
        ({"energy": 0.0}, r"energy must be in \(0, 1\]"),
        ({"energy": 1.5}, r"energy must be in \(0, 1\]"),
        ({"target_ratio": 0.0}, r"target_ratio must be in \(0, 1\).*got 0.0"),
        ({"target_ratio": 1.0}, r"target_ratio must be in \(0, 1\).*got 1.0"),
        ({"target_ratio": 1e-4}, "target_ratio=0.0001 is unreachable"),
        ({"rank": 2, "conv_decomposition": "bogus"}, "conv_decomposition must be one of"),
        ({"target_ratio": 0.5, "conv_decomposition": "tucker2"}, "got 'tucker2'"),
        ({"rank": 2, "layers": "nope"}, "layers='nope' matches no layer"),
        ({"rank": {"nope": 2}}, r"rank names layers that model 'small' does not have: \['nope'\]"),
        ({"rank": 500}, "found no layer that factorizing would make smaller"),
    ],
)
def test_bad_arguments_raise_before_anything_changes(kwargs, message):
    model = _small_model()
    with pytest.raises(ValueError, match=message):
        tfc.factorize_model(model, verbose=0, **kwargs)


@pytest.mark.parametrize(
    "layers, kind",
    [(["bn"], "BatchNormalization"), (["conv1", "bn"], "BatchNormalization")],
)
def test_a_selected_layer_it_cannot_factorize_is_named(layers, kind):
    model = _small_model()
    with pytest.raises(TypeError, match=f"cannot factorize layer 'bn': layer type {kind}"):
        tfc.factorize_model(model, rank=2, layers=layers, verbose=0)


def test_depthwise_and_grouped_convs_are_refused_when_selected():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            keras.layers.DepthwiseConv2D(3, name="dw"),
            keras.layers.Conv2D(8, 3, groups=2, name="grouped"),
        ]
    )
    with pytest.raises(TypeError, match="layer type DepthwiseConv2D cannot be factorized"):
        tfc.factorize_model(model, rank=2, layers=["dw"], verbose=0)
    with pytest.raises(TypeError, match=r"grouped Conv2D \(groups=2\)"):
        tfc.factorize_model(model, rank=2, layers=["grouped"], verbose=0)
    # Not selected explicitly: skipped and reported; nothing left -> clear error.
    with pytest.raises(ValueError, match="dw: layer type DepthwiseConv2D"):
        tfc.factorize_model(model, rank=2, verbose=0)


def test_subclassed_model_is_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(8)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 16), "float32"))
    with pytest.raises(TypeError, match="subclassed"):
        tfc.factorize_model(net, rank=2, verbose=0)


def test_expand_lowrank_gives_stock_layers_that_quantize_model_takes(
    tmp_path, digits, trained_digits_cnn
):
    small = tfc.factorize_model(trained_digits_cnn, target_ratio=0.5, verbose=0)
    expanded = tfc.transforms.expand_lowrank(small)
    x = digits.x_test[:64]
    np.testing.assert_allclose(
        expanded.predict(x, verbose=0), small.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )
    leaf_types = {type(layer) for _, layer in walk_layers(expanded)}
    assert not leaf_types & {LowRankDense, LowRankConv2D}
    assert expanded.count_params() == small.count_params()

    qat, log = tfc.quantize_model(expanded, return_log=True)
    assert len(log.replaced) == 10  # 3 convs x 2 factors + 2 Dense x 2 factors
    train_classifier(qat, digits, epochs=1, learning_rate=5e-4)
    report = tfc.tflite_export.export(
        qat,
        tmp_path / "lr_qat.tflite",
        quantization="int8",  # no representative data: the QAT ranges
        verify_data=digits.x_test,
        verify_labels=digits.y_test,
        verbose=0,
    )
    assert report.op_counts["CONV_2D[int8]"] == 6
    assert report.op_counts["FULLY_CONNECTED[int8]"] == 4
    assert report.top1_agreement >= 0.97
    assert report.tflite_accuracy >= 0.93


def test_expand_lowrank_needs_lowrank_layers():
    with pytest.raises(ValueError, match="has no LowRankDense or LowRankConv2D layer"):
        tfc.transforms.expand_lowrank(_small_model())
