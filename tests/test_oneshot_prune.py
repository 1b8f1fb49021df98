"""tfc.oneshot.prune on Keras models: NumPy references, sequential inputs, masks, saving."""

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.oneshot.engine import Settings, solve_layer
from tfcompress.oneshot.hessian import HessianSum
from tfcompress.pruning.constraint import PruningMask


def _correlated_inputs(n, features, seed=0):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, max(1, features // 3)))
    mixing = rng.normal(size=(latent.shape[1], features))
    return (latent @ mixing + 0.2 * rng.normal(size=(n, features))).astype("float32")


def _mlp(features=12, hidden=16, outputs=6):
    inputs = keras.Input((features,))
    h = keras.layers.Dense(hidden, activation="relu", name="d1")(inputs)
    return keras.Model(inputs, keras.layers.Dense(outputs, name="d2")(h), name="mlp")


def test_obs_on_a_dense_layer_matches_the_numpy_closed_form():
    x = _correlated_inputs(64, 4)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, name="d")])
    pruned = tfc.oneshot.prune(model, x, sparsity=0.25, method="obs", verbose=0)

    h = 2.0 * x.astype(np.float64).T @ x / len(x)
    hinv = np.linalg.inv(h + 0.01 * np.mean(np.diag(h)) * np.eye(4))
    w = np.asarray(model.get_layer("d").kernel, np.float64)[:, 0]
    q = int(np.argmin(w**2 / np.diag(hinv)))
    expected = w - w[q] / hinv[q, q] * hinv[:, q]
    expected[q] = 0.0
    np.testing.assert_allclose(
        pruned.get_layer("d").kernel.numpy()[:, 0], expected, rtol=1e-4, atol=1e-6
    )
    np.testing.assert_array_equal(
        pruned.get_layer("d").bias.numpy(), model.get_layer("d").bias.numpy()
    )


def test_each_layer_sees_inputs_through_the_layers_already_pruned():
    x = _correlated_inputs(200, 12, seed=1)
    model = _mlp()
    pruned = tfc.oneshot.prune(model, x, sparsity=0.5, verbose=0)
    d1, d2 = pruned.get_layer("d1"), pruned.get_layer("d2")
    hidden = np.maximum(x @ d1.kernel.numpy() + d1.bias.numpy(), 0)  # the pruned d1's output
    acc = HessianSum(1, 16)
    acc.add_rows(hidden)
    w2 = model.get_layer("d2").kernel.numpy().T[None]
    expected = solve_layer(w2, acc.hessian(), Settings("prune", "sparsegpt", sparsity=0.5))
    np.testing.assert_allclose(d2.kernel.numpy(), expected.weights[0].T, rtol=1e-4, atol=1e-5)


def test_result_is_a_copy_with_masks_that_survive_fit_and_keras_files(tmp_path):
    x = _correlated_inputs(128, 12, seed=2)
    model = _mlp()
    before = [w.copy() for w in model.get_weights()]
    pruned, report = tfc.oneshot.prune(model, x, sparsity=0.6, verbose=0, return_report=True)
    for old, now in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, now)  # the user's model is untouched
    assert model.get_layer("d1").kernel.constraint is None
    assert [layer.name for layer in pruned.layers[1:]] == ["d1", "d2"]
    for name in ("d1", "d2"):
        layer = pruned.get_layer(name)
        assert type(layer) is keras.layers.Dense
        mask = layer.kernel.constraint
        assert isinstance(mask, PruningMask)
        assert keras.backend.standardize_dtype(mask.mask.dtype) == "uint8"  # a byte a weight
        np.testing.assert_array_equal(mask.value(), (layer.kernel.numpy() != 0).astype("float32"))
        assert report.layer(name).sparsity == pytest.approx(0.6, abs=0.01)
    zeros = pruned.get_layer("d1").kernel.numpy() == 0
    pruned.compile("sgd", "mse")
    pruned.fit(x, np.ones((128, 6)), epochs=1, verbose=0)
    assert np.all(pruned.get_layer("d1").kernel.numpy()[zeros] == 0)
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0))
    reloaded_mask = loaded.get_layer("d1").kernel.constraint
    assert isinstance(reloaded_mask, PruningMask)
    assert keras.backend.standardize_dtype(reloaded_mask.mask.dtype) == "uint8"
    np.testing.assert_array_equal(reloaded_mask.value(), (~zeros).astype("float32"))
    # A config written before masks kept their dtype loads as float32.
    config = keras.constraints.serialize(reloaded_mask)
    del config["config"]["dtype"]
    old_style = keras.constraints.deserialize(config)
    assert keras.backend.standardize_dtype(old_style.mask.dtype) == "float32"
    np.testing.assert_array_equal(old_style.value(), reloaded_mask.value())


def test_report_lists_errors_times_and_memory():
    x = _correlated_inputs(300, 12, seed=3)
    _pruned, report = tfc.oneshot.prune(_mlp(), x, verbose=0, return_report=True)
    assert [r.name for r in report.layers] == ["d1", "d2"]
    for r in report.layers:
        assert 0 <= r.error < r.baseline_error
        assert r.samples == 300 and r.seconds >= 0 and r.working_bytes > 0
        assert r.carrier == "mask" and r.damping == pytest.approx(0.01)
    assert report.passes == 2 and report.calibration_samples == 300
    assert report.peak_layer_bytes > 0 and report.peak_rss_bytes > 0
    assert "d1" in str(report) and "sparsegpt" in str(report)


def test_attention_projections_share_one_pass_and_get_masks(tmp_path):
    tokens = keras.Input((6, 8))
    h = keras.layers.MultiHeadAttention(2, 4, name="attn")(tokens, tokens)
    out = keras.layers.Dense(5, name="proj")(h)
    model = keras.Model(tokens, out)
    x = np.random.default_rng(4).normal(size=(40, 6, 8)).astype("float32")
    pruned, report = tfc.oneshot.prune(
        model,
        x,
        pattern="2:4",
        layers=["MultiHeadAttention", "Dense"],
        verbose=0,
        return_report=True,
    )
    names = [r.name for r in report.layers]
    assert names == [
        "attn/query",
        "attn/key",
        "attn/value",
        "attn/attention_output",
        "proj",
    ]
    assert report.passes == 3  # query/key/value see the same input: one pass
    query = pruned.get_layer("attn")._query_dense
    assert isinstance(query.kernel.constraint, PruningMask)
    # query kernel (8, heads, size): 2 of every 4 input features kept
    groups = (query.kernel.numpy() != 0).reshape(2, 4, -1).sum(axis=1)
    assert np.all(groups == 2)
    assert report.layer("attention_output").samples == 40 * 6


def test_conv_and_depthwise_nm_patterns_along_the_inputs():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 4)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
            keras.layers.DepthwiseConv2D(3, padding="same", name="dw"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, name="out"),
        ]
    )
    x = np.random.default_rng(5).normal(size=(16, 6, 6, 4)).astype("float32")
    for method in ("sparsegpt", "obs", "magnitude"):
        pruned = tfc.oneshot.prune(model, x, pattern="2:4", method=method, verbose=0)
        conv = pruned.get_layer("conv").kernel.numpy().reshape(-1, 8)  # (kh kw in, out)
        assert np.all((conv != 0).reshape(-1, 4, 8).sum(axis=1) == 2)
        dw = pruned.get_layer("dw").kernel.numpy().reshape(9, 8)  # taps x channels
        kept = (dw != 0).astype(int)
        assert np.all(kept[:8].reshape(2, 4, 8).sum(axis=1) == 2) and np.all(kept[8] == 1)


def test_magnitude_baseline_equals_the_pruning_package_masks():
    from tfcompress.pruning.masks import compute_masks

    x = _correlated_inputs(50, 12, seed=6)
    model = _mlp()
    pruned = tfc.oneshot.prune(model, x, sparsity=0.5, method="magnitude", verbose=0)
    kernel = model.get_layer("d1").kernel.numpy()
    (mask,) = compute_masks([kernel], 0.5)
    np.testing.assert_array_equal(pruned.get_layer("d1").kernel.numpy(), kernel * mask)


@pytest.mark.jax
def test_prune_runs_on_the_current_backend():
    x = _correlated_inputs(64, 12, seed=7)
    pruned, report = tfc.oneshot.prune(_mlp(), x, sparsity=0.5, verbose=0, return_report=True)
    assert np.mean(keras.ops.convert_to_numpy(pruned.get_layer("d2").kernel) == 0) == 0.5
    assert report.layers[1].error < report.layers[1].baseline_error


def test_shared_layer_sums_the_hessian_of_every_call():
    a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    shared = keras.layers.Dense(4, name="shared")
    merged = keras.layers.Concatenate()([shared(a), shared(b)])
    model = keras.Model({"a": a, "b": b}, keras.layers.Dense(2, name="out")(merged))
    rng = np.random.default_rng(8)
    xa, xb = (rng.normal(size=(50, 6)).astype("float32") for _ in range(2))
    pruned, report = tfc.oneshot.prune(
        model, {"a": xa, "b": xb}, sparsity=0.5, verbose=0, return_report=True
    )
    assert report.layer("shared").samples == 100  # both calls
    acc = HessianSum(1, 6)
    acc.add_rows(np.concatenate([xa, xb]))
    w = model.get_layer("shared").kernel.numpy().T[None]
    expected = solve_layer(w, acc.hessian(), Settings("prune", "sparsegpt", sparsity=0.5))
    np.testing.assert_allclose(
        pruned.get_layer("shared").kernel.numpy(), expected.weights[0].T, rtol=1e-4, atol=1e-5
    )
    assert report.passes == 2


def test_nested_models_are_entered():
    inner = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(8, activation="relu", name="inner_dense")],
        name="inner",
    )
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="top")(inner(inputs)))
    x = _correlated_inputs(64, 8, seed=9)
    pruned, report = tfc.oneshot.prune(model, x, sparsity=0.5, verbose=0, return_report=True)
    assert [r.name for r in report.layers] == ["inner/inner_dense", "top"]
    kernel = pruned.get_layer("inner").get_layer("inner_dense").kernel
    assert isinstance(kernel.constraint, PruningMask) and np.mean(kernel.numpy() == 0) == 0.5
