"""tfc.oneshot: every bad input is refused before anything is copied or changed."""

import importlib.util

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.oneshot import api


@pytest.fixture
def model():
    inputs = keras.Input((8,), name="features")
    h = keras.layers.Dense(6, activation="relu", name="d1")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, name="d2")(h), name="mlp")


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=(40, 8)).astype("float32")


def _untouched(model, before):
    for old, now in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, now)
    assert all(v.constraint is None for v in model.weights)


ENTRY_POINTS = [tfc.oneshot.prune, tfc.oneshot.quantize, tfc.oneshot.compress]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_missing_and_empty_calibration_data(entry, model):
    before = model.get_weights()
    with pytest.raises(ValueError, match="calibration_data is None"):
        entry(model, None, verbose=0)
    with pytest.raises(ValueError, match="calibration_data is empty"):
        entry(model, np.zeros((0, 8), "float32"), verbose=0)
    with pytest.raises(ValueError, match="calibration_data is empty"):
        entry(model, iter([]), verbose=0)
    _untouched(model, before)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_wrong_shape_names_both_shapes(entry, model):
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"shape \(16, 5\).*shape \(None, 8\)"):
        entry(model, np.zeros((16, 5), "float32"), verbose=0)
    _untouched(model, before)


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5, "0.5", float("nan")])
def test_sparsity_outside_zero_one(model, x, sparsity):
    with pytest.raises(ValueError, match="sparsity"):
        tfc.oneshot.prune(model, x, sparsity=sparsity, verbose=0)
    with pytest.raises(ValueError, match="sparsity"):
        tfc.oneshot.compress(model, x, sparsity=sparsity, verbose=0)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("2:x", "not a valid N:M"),
        ("4:2", "0 < N < M"),
        ("0:4", "0 < N < M"),
        ("2:2", "0 < N < M"),
        ("block", "expected 'unstructured' or an N:M"),
        (4, "expected 'unstructured' or an N:M"),
    ],
)
def test_malformed_nm_patterns(model, x, pattern, message):
    with pytest.raises(ValueError, match=message):
        tfc.oneshot.prune(model, x, pattern=pattern, verbose=0)


def test_sparsity_must_agree_with_the_nm_pattern(model, x):
    with pytest.raises(ValueError, match=r"sparsity=0.6 does not match pattern '2:4'"):
        tfc.oneshot.prune(model, x, sparsity=0.6, pattern="2:4", verbose=0)
    pruned = tfc.oneshot.prune(model, x, sparsity=0.75, pattern="1:4", verbose=0)
    assert np.mean(pruned.get_layer("d1").kernel.numpy() == 0) == 0.75


@pytest.mark.parametrize("bits", [1, 9, 16, 4.0, "4", True])
def test_bits_outside_the_supported_set(model, x, bits):
    for entry in (tfc.oneshot.quantize, tfc.oneshot.compress):
        with pytest.raises(ValueError, match=r"bits=.* is not supported; expected one of \[2, 3"):
            entry(model, x, bits=bits, verbose=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "gptq"}, "method='gptq' is not supported"),
        ({"damping": 0}, "damping"),
        ({"block_size": 0}, "block_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"max_samples": 0}, "max_samples"),
    ],
)
def test_other_arguments(model, x, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tfc.oneshot.prune(model, x, verbose=0, **kwargs)


def test_quantize_arguments(model, x):
    with pytest.raises(ValueError, match="method='sparsegpt' is not supported"):
        tfc.oneshot.quantize(model, x, method="sparsegpt", verbose=0)
    with pytest.raises(ValueError, match="group_size"):
        tfc.oneshot.quantize(model, x, group_size=0, verbose=0)
    with pytest.raises(ValueError, match="per_channel"):
        tfc.oneshot.quantize(model, x, per_channel="yes", verbose=0)
    with pytest.raises(TypeError, match="method='mfac' only"):
        tfc.oneshot.prune(model, x, verbose=0, m=32)


def test_layers_without_a_rule_are_listed(x):
    tokens = keras.Input((5,), dtype="int32")
    h = keras.layers.Embedding(20, 8, name="embed")(tokens)
    h = keras.layers.Conv1DTranspose(4, 3, name="up")(h)
    out = keras.layers.Dense(3, name="head")(h)
    model = keras.Model(tokens, out)
    ids = np.random.default_rng(1).integers(0, 20, size=(30, 5)).astype("int32")
    before = model.get_weights()
    with pytest.raises(
        ValueError,
        match=r"no one-shot rule for 2 layer\(s\).*embed \(Embedding.*up \(Conv1DTranspose",
    ) as error:
        tfc.oneshot.prune(model, ids, verbose=0)
    assert "layers=['Dense']" in str(error.value)
    with pytest.raises(ValueError, match=r"no one-shot rule for 1 selected layer\(s\).*embed"):
        tfc.oneshot.quantize(model, ids, layers=["embed", "head"], verbose=0)
    with pytest.raises(ValueError, match="no layer named"):
        tfc.oneshot.prune(model, ids, layers=["nope"], verbose=0)
    _untouched(model, before)
    pruned, report = tfc.oneshot.prune(model, ids, layers=["head"], verbose=0, return_report=True)
    assert [r.name for r in report.layers] == ["head"]
    assert ("embed", "Embedding", "Embedding has no one-shot rule") in report.skipped
    np.testing.assert_array_equal(pruned.get_layer("embed").embeddings.numpy(), before[0])


def test_non_finite_weights_and_subclassed_models(model, x):
    bad = keras.models.clone_model(model)
    weights = model.get_weights()
    weights[0][0, 0] = np.nan
    bad.set_weights(weights)
    with pytest.raises(ValueError, match="NaN/Inf weights"):
        tfc.oneshot.prune(bad, x, verbose=0)

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, inputs):
            return self.dense(inputs)

    sub = Sub()
    sub(x)
    with pytest.raises((TypeError, ValueError)):
        tfc.oneshot.prune(sub, x, verbose=0)
    with pytest.raises(TypeError, match=r"keras\.Model"):
        tfc.oneshot.prune("model.keras", x, verbose=0)


def test_fewer_rows_than_columns_warns_with_the_dampening(model):
    few = np.random.default_rng(2).normal(size=(5, 8)).astype("float32")
    with pytest.warns(UserWarning) as record:
        tfc.oneshot.prune(model, few, verbose=0)
    messages = [str(w.message) for w in record]
    assert any("'d1': 5 calibration input vectors for 8 input columns" in m for m in messages)
    assert any("'d2': 5 calibration input vectors for 6 input columns" in m for m in messages)
    assert all("dampening 0.01 x mean(diag H)" in m for m in messages)
    assert all(w.filename == __file__ for w in record)  # points at the caller


def test_mfac_dispatch(model, x, monkeypatch):
    if importlib.util.find_spec("tfcompress.oneshot.mfac") is None:
        pytest.skip("tfcompress.oneshot.mfac is not there yet")
    mfac = pytest.importorskip("tfcompress.oneshot.mfac")
    calls = []

    def fake(model_, data, *, sparsity, layers, **options):
        calls.append((model_, data, sparsity, layers, options))
        return "pruned"

    monkeypatch.setattr(mfac, "mfac_prune", fake)
    assert (
        tfc.oneshot.prune(model, x, 0.4, method="mfac", layers=["d1"], verbose=0, m=8) == "pruned"
    )
    ((got_model, got_data, sparsity, layers, options),) = calls
    assert got_model is model and got_data is x
    assert (sparsity, layers, options) == (0.4, ["d1"], {"m": 8})
    with pytest.raises(ValueError, match="unstructured"):
        tfc.oneshot.prune(model, x, pattern="2:4", method="mfac", verbose=0)
    assert api.PRUNE_METHODS[-1] == "mfac"
