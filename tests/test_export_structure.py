"""Export keeps a model's input and output structure: dict inputs, nested backbones, dict outputs.

Text models as text libraries build them (token ids + padding mask + segment ids into a
transformer encoder, a causal decoder, a backbone with dict outputs under a head), exported
float and int8, verified, and run through ``TFLiteModel.predict`` with the same dict inputs.
"""

import keras
import numpy as np
import pytest
from keras import layers, ops

from tfcompress.tflite_export import TFLiteModel, export

SEQ, VOCAB, DIM = 8, 20, 16


def _attention_mask(mask):
    return ops.cast(mask[:, None, :], "bool")


def _encoder():
    ids = keras.Input((SEQ,), dtype="int32", name="token_ids")
    mask = keras.Input((SEQ,), dtype="int32", name="padding_mask")
    segments = keras.Input((SEQ,), dtype="int32", name="segment_ids")
    x = layers.Embedding(VOCAB, DIM)(ids) + layers.Embedding(2, DIM)(segments)
    h = layers.MultiHeadAttention(2, DIM // 2)(x, x, attention_mask=_attention_mask(mask))
    x = layers.LayerNormalization()(x + h)
    logits = layers.Dense(3, name="logits")(layers.GlobalAveragePooling1D()(x))
    inputs = {"token_ids": ids, "padding_mask": mask, "segment_ids": segments}
    return keras.Model(inputs, logits, name="encoder")


def _decoder():
    ids = keras.Input((SEQ,), dtype="int32", name="token_ids")
    x = layers.Embedding(VOCAB, DIM)(ids)
    h = layers.MultiHeadAttention(2, DIM // 2)(x, x, use_causal_mask=True)
    x = layers.LayerNormalization()(x + h)
    return keras.Model({"token_ids": ids}, layers.Dense(VOCAB, name="lm_head")(x), name="decoder")


def _backbone_and_head():
    ids = keras.Input((SEQ,), dtype="int32", name="token_ids")
    mask = keras.Input((SEQ,), dtype="int32", name="padding_mask")
    x = layers.Embedding(VOCAB, DIM)(ids)
    h = layers.MultiHeadAttention(2, DIM // 2)(x, x, attention_mask=_attention_mask(mask))
    sequence = layers.LayerNormalization()(x + h)
    pooled = layers.GlobalAveragePooling1D()(sequence)
    backbone = keras.Model(
        {"token_ids": ids, "padding_mask": mask},
        {"sequence_output": sequence, "pooled_output": pooled},
        name="backbone",
    )
    ids2 = keras.Input((SEQ,), dtype="int32", name="token_ids")
    mask2 = keras.Input((SEQ,), dtype="int32", name="padding_mask")
    features = backbone({"token_ids": ids2, "padding_mask": mask2})
    logits = layers.Dense(2, name="head")(features["pooled_output"])
    outputs = {"logits": logits, "features": [features["sequence_output"], pooled_copy(features)]}
    return keras.Model({"token_ids": ids2, "padding_mask": mask2}, outputs, name="classifier")


def pooled_copy(features):
    return layers.Identity(name="pooled")(features["pooled_output"])


def _text_batch(n, keys, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((n, SEQ), "int32")
    mask[:, 6:] = 0
    data = {
        "token_ids": rng.integers(0, VOCAB, (n, SEQ)).astype("int32"),
        "padding_mask": mask,
        "segment_ids": np.repeat((np.arange(SEQ) >= 4).astype("int32")[None], n, 0),
    }
    return {k: data[k] for k in keys}


def _assert_same_structure_and_close(got, expected, atol):
    assert keras.tree.assert_same_structure(got, expected) is None
    for g, e in zip(keras.tree.flatten(got), keras.tree.flatten(expected)):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, atol=atol)


@pytest.mark.parametrize("build", [_encoder, _decoder, _backbone_and_head])
@pytest.mark.parametrize("quantization", [None, "int8"])
def test_dict_input_models_export_verified(build, quantization, tmp_path):
    model = build()
    x = _text_batch(48, sorted(model.input))
    report = export(
        model,
        tmp_path / "m.tflite",
        quantization=quantization,
        representative_data=x if quantization else None,
        verify_data=x,
        verbose=0,
    )
    assert report.verified and report.verify_samples == 48
    lite = TFLiteModel(report.path)
    assert lite.input_names == sorted(model.input)  # the file names inputs as the model does
    expected = model.predict(x, verbose=0)
    got = lite.predict(x, batch_size=16)
    if quantization is None:
        assert report.max_abs_diff < 1e-4
        _assert_same_structure_and_close(got, expected, atol=1e-4)
    else:
        assert "FULLY_CONNECTED[int8]" in report.op_counts
        assert "BATCH_MATMUL[int8]" in report.op_counts
        spread = max(float(np.ptp(e)) for e in keras.tree.flatten(expected))
        _assert_same_structure_and_close(got, expected, atol=0.25 * spread)


def test_dict_outputs_keep_their_names_and_nesting(tmp_path):
    model = _backbone_and_head()
    x = _text_batch(5, ["padding_mask", "token_ids"])
    export(model, tmp_path / "m.tflite", verify_data=x, verbose=0)
    lite = TFLiteModel(tmp_path / "m.tflite")
    assert lite.output_names == ["features.0", "features.1", "logits"]
    got = lite.predict(x)
    assert sorted(got) == ["features", "logits"] and isinstance(got["features"], list)
    assert got["logits"].shape == (5, 2) and got["features"][0].shape == (5, SEQ, DIM)


def test_predict_names_a_missing_input(tmp_path):
    model = _encoder()
    x = _text_batch(4, sorted(model.input))
    export(model, tmp_path / "m.tflite", verify=False, verbose=0)
    lite = TFLiteModel(tmp_path / "m.tflite")
    del x["segment_ids"]
    with pytest.raises(ValueError, match=r"missing \['segment_ids'\]"):
        lite.predict(x)


def test_list_inputs_and_outputs_stay_lists(tmp_path):
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    joined = layers.Concatenate()([a, b])
    model = keras.Model([a, b], [layers.Dense(4)(joined), layers.Dense(1)(joined)])
    x = [np.ones((6, 3), "float32"), np.zeros((6, 2), "float32")]
    report = export(model, tmp_path / "m.tflite", verify_data=x, verbose=0)
    got = TFLiteModel(report.path).predict(x)
    assert isinstance(got, list) and [g.shape for g in got] == [(6, 4), (6, 1)]
    _assert_same_structure_and_close(got, model.predict(x, verbose=0), atol=1e-5)


def test_dict_keys_that_cannot_be_signature_names_fall_back_to_flat_names(tmp_path):
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    model = keras.Model({"first input": a, "second input": b}, {"sum out": a + 2 * b})
    x = {"first input": np.ones((4, 3), "float32"), "second input": np.zeros((4, 3), "float32")}
    report = export(model, tmp_path / "m.tflite", verify_data=x, verbose=0)
    assert report.verified and report.max_abs_diff < 1e-6
    lite = TFLiteModel(report.path)
    assert lite.input_names == ["input_0", "input_1"] and lite.output_names == ["output_0"]
    np.testing.assert_allclose(lite.predict(x), np.ones((4, 3)))
