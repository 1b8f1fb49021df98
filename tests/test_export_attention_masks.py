"""Causal attention survives full-integer export (tfcompress.export.attention_masks)."""

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.export import attention_masks
from tfcompress.export.interpreter import TFLiteModel


def _causal_attention_model():
    keras.utils.set_random_seed(3)
    tokens = keras.Input((12, 16))
    h = keras.layers.MultiHeadAttention(2, 8)(tokens, tokens, use_causal_mask=True)
    return keras.Model(tokens, keras.layers.Dense(10)(h))


def _relative_error(model, path, x):
    runner = TFLiteModel(path)
    want = model.predict(x, verbose=0)
    got = runner.predict(x)
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 12, 16)).astype("float32")


def test_int8_file_of_causal_attention_agrees_with_keras(tmp_path, data):
    model = _causal_attention_model()
    report = tfc.tflite_export.export(
        model,
        tmp_path / "a.tflite",
        quantization="int8",
        representative_data=data,
        verify_data=data[:16],
        verbose=0,
    )
    assert report.verified
    err = _relative_error(model, tmp_path / "a.tflite", data[:16])
    assert err < 0.08


def test_keras_own_mask_constant_is_what_breaks_int8(tmp_path, data, monkeypatch):
    # the same export with Keras's -0.7 * float32.max mask: every logit rounds to one step
    model = _causal_attention_model()
    import tfcompress.export.converter as converter

    monkeypatch.setattr(converter, "int8_friendly_attention_masks", lambda: _unchanged())
    tfc.tflite_export.export(
        model,
        tmp_path / "b.tflite",
        quantization="int8",
        representative_data=data,
        verify=False,
        verbose=0,
    )
    err = _relative_error(model, tmp_path / "b.tflite", data[:16])
    assert err > 0.15


def test_masks_are_restored_and_float_outputs_unchanged(data):
    from keras.src.backend.tensorflow import nn as backend_nn

    original = backend_nn._apply_masks
    model = _causal_attention_model()
    want = model.predict(data[:4], verbose=0)
    with attention_masks.int8_friendly_attention_masks() as replaced:
        assert replaced and backend_nn._apply_masks is not original
        import tensorflow as tf

        got = tf.function(lambda x: model(x, training=False))(data[:4]).numpy()
    assert backend_nn._apply_masks is original
    np.testing.assert_allclose(got, want, atol=1e-5)


def _unchanged():
    import contextlib

    return contextlib.nullcontext(False)
