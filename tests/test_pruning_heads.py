"""Attention-head pruning (GradualPruning granularity="head") and shrink_model removing heads."""

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.pruning.heads import head_masks, shrink_attention
from tfcompress.pruning.masks import compute_masks, get_criterion, matrix_view

HEADS, KEY_DIM, D_MODEL, LENGTH = 4, 4, 16, 8


def attention_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((LENGTH, D_MODEL))
    h = keras.layers.MultiHeadAttention(HEADS, KEY_DIM, name="attn")(inputs, inputs)
    x = keras.layers.Add(name="residual")([inputs, h])
    f = keras.layers.Dense(32, activation="gelu", name="ffn_in")(x)
    f = keras.layers.Dense(D_MODEL, name="ffn_out")(f)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(keras.layers.Add()([x, f]))
    outputs = keras.layers.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, LENGTH, D_MODEL)).astype("float32"), rng.integers(0, 3, n)


def _projections(model):
    attn = model.get_layer("attn")
    q, k, v, o = (attn._query_dense, attn._key_dense, attn._value_dense, attn._output_dense)
    return [np.asarray(d.kernel) for d in (q, k, v, o)], [np.asarray(d.bias) for d in (q, k, v)]


def _pruned(model, sparsity=0.5, **kwargs):
    x, y = _data()
    pruning = tfc.callbacks.GradualPruning(
        sparsity, granularity="head", schedule="constant", begin_step=0, **kwargs
    )
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[pruning])
    return pruning


def _dead_heads(model):
    (q, k, v, o), biases = _projections(model)
    dead = [
        np.all(q[:, h] == 0) and np.all(k[:, h] == 0) and np.all(v[:, h] == 0)
        and np.all(o[h] == 0) and all(np.all(b[h] == 0) for b in biases)
        for h in range(HEADS)
    ]  # fmt: skip
    return np.array(dead)


def test_head_masks_match_a_numpy_reference():
    rng = np.random.default_rng(1)
    weights = [rng.normal(size=(D_MODEL, HEADS, KEY_DIM)) for _ in range(3)]
    weights.append(rng.normal(size=(HEADS, KEY_DIM, D_MODEL)))
    weights[2][:, 3] *= 0.01  # head 3 and then head 1 are the weakest
    weights[3][1] *= 0.2
    axes = [(1,), (1,), (1,), (0,)]
    masks = head_masks(weights, [[0, 1, 2, 3]], axes, 0.5, get_criterion("magnitude"))
    score = sum(
        np.abs(np.moveaxis(w, a[0], -1)).reshape(-1, HEADS).mean(0) for w, a in zip(weights, axes)
    )
    expected = np.ones(HEADS, bool)
    expected[np.argsort(score, kind="stable")[:2]] = False
    assert not expected[3] and not expected[1]
    for mask, axis in zip(masks, axes):
        np.testing.assert_array_equal(matrix_view(mask, axis).all(axis=0), expected)
        np.testing.assert_array_equal(matrix_view(mask, axis).any(axis=0), expected)
    # a layer always keeps one head, in either scope
    for scope in ("layer", "global"):
        (kept,) = head_masks(
            weights[:1], [[0]], axes[:1], 0.99, get_criterion("magnitude"), scope=scope
        )
        assert matrix_view(kept, (1,)).any(axis=0).sum() == 1


def test_gradual_head_pruning_zeroes_whole_heads_and_shrink_removes_them():
    model = attention_model()
    pruning = _pruned(model)
    dead = _dead_heads(model)
    assert dead.sum() == 2  # 50% of 4 heads, every projection and q/k/v bias of each
    assert pruning.get_config()["granularity"] == "head"
    x, _ = _data(8, seed=2)
    small = tfc.shrink_model(model)
    assert small.get_layer("attn").num_heads == 2
    assert small.count_params() < model.count_params()
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_taylor_head_pruning_with_global_scope():
    model = attention_model(seed=3)
    _pruned(model, 0.25, scope="global", criterion="taylor", data=_data(16, seed=4))
    assert _dead_heads(model).sum() == 1


def test_shrink_folds_a_silent_heads_value_bias_into_the_output_bias():
    model = attention_model(seed=5)
    attn = model.get_layer("attn")
    value = attn._value_dense
    kernel = np.asarray(value.kernel)
    kernel[:, 2] = 0.0  # head 2's values are its bias, the same for every query
    value.kernel.assign(kernel)
    bias = np.asarray(value.bias)
    bias[2] = np.linspace(-1.0, 1.0, KEY_DIM)
    value.bias.assign(bias)
    heads, _ = shrink_attention(attn)
    assert heads == HEADS - 1
    x, _ = _data(8, seed=6)
    small = tfc.shrink_model(model)
    assert small.get_layer("attn").num_heads == HEADS - 1
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_ffn_neurons_are_channels_and_go_with_the_heads():
    model = attention_model(seed=7)
    x, y = _data()
    callbacks = [
        tfc.callbacks.GradualPruning(0.5, granularity="head", schedule="constant"),
        tfc.callbacks.GradualPruning(
            0.5, granularity="channel", schedule="constant", layers=["ffn_in"]
        ),
    ]
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=callbacks)
    small = tfc.shrink_model(model)
    assert small.get_layer("ffn_in").units == 16 and small.get_layer("attn").num_heads == 2
    probe, _ = _data(8, seed=8)
    np.testing.assert_allclose(
        small.predict(probe, verbose=0), model.predict(probe, verbose=0), atol=1e-5
    )


def test_shrunk_heads_export_to_a_smaller_tflite_file_that_agrees(tmp_path):
    model = attention_model(seed=9)
    _pruned(model)
    small = tfc.shrink_model(model)
    x, _ = _data(8, seed=10)
    big = tfc.tflite_export.export(model, tmp_path / "pruned.tflite", verify_data=x, verbose=0)
    shrunk = tfc.tflite_export.export(small, tmp_path / "shrunk.tflite", verify_data=x, verbose=0)
    assert shrunk.verified and shrunk.bytes < big.bytes


def test_head_granularity_errors_before_anything_changes():
    model = attention_model(seed=11)
    before = [w.copy() for w in model.get_weights()]
    x, y = _data()
    pruning = tfc.callbacks.GradualPruning(0.5, granularity="head", layers=["attn", "ffn_in"])
    with pytest.raises(ValueError, match=r"selects 'ffn_in', a Dense; select attention layers"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[pruning])
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    plain.compile("sgd", "mse")
    with pytest.raises(ValueError, match=r"found no keras\.layers\.MultiHeadAttention layer"):
        plain.fit(
            np.zeros((4, 4)), np.zeros((4, 2)), verbose=0,
            callbacks=[tfc.callbacks.GradualPruning(0.5, granularity="head")],
        )  # fmt: skip
    with pytest.raises(ValueError, match="use GradualPruning\\(granularity='head'\\)"):
        compute_masks([np.ones((4, 2, 2))], 0.5, "head")


def test_head_pruning_config_round_trips():
    pruning = tfc.callbacks.GradualPruning(0.5, granularity="head", layers=["attn"], scope="global")
    clone = tfc.callbacks.GradualPruning.from_config(pruning.get_config())
    assert clone.get_config() == pruning.get_config() and str(clone.granularity) == "head"


def test_summary_counts_attention_macs_and_shrinking_heads_lowers_them():
    from tfcompress.reporting.summary import layer_macs

    query, memory = keras.Input((5, 16)), keras.Input((7, 12))
    cross = keras.layers.MultiHeadAttention(2, 4, value_dim=3, name="cross")
    cross(query, memory)
    projections = 5 * 16 * 8 + 7 * 12 * 8 + 7 * 12 * 6 + 5 * 6 * 16
    assert layer_macs(cross) == projections + 2 * 5 * 7 * (4 + 3)
    model = attention_model(seed=12)
    _pruned(model)
    small = tfc.shrink_model(model)
    before, after = layer_macs(model.get_layer("attn")), layer_macs(small.get_layer("attn"))
    assert after == before // 2  # half the heads: half of every term
