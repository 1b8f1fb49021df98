"""Files converted with a fixed batch size (recurrent models get batch 1) still predict any n."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcompress import tflite_export


def _dense_model() -> keras.Model:
    inputs = keras.Input((5,))
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(inputs))


def test_fixed_batch_file_predicts_a_ragged_number_of_examples(tmp_path):
    model = _dense_model()
    x = np.random.default_rng(0).normal(size=(10, 5)).astype("float32")
    report = tflite_export.export(
        model,
        tmp_path / "fixed.tflite",
        input_signature=[tf.TensorSpec((4, 5), "float32")],
        verify_data=x,
        verbose=0,
    )
    lite = tflite_export.TFLiteModel(tmp_path / "fixed.tflite")
    assert lite.fixed_batch_size == 4
    # 10 examples = two full chunks of 4 and a padded chunk of 2.
    got = lite.predict(x)
    assert got.shape == (10, 3)
    np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-5)
    assert report.verify_samples == 10 and report.max_abs_diff < 1e-5


def test_free_batch_file_has_no_fixed_batch_size(tmp_path):
    tflite_export.export(_dense_model(), tmp_path / "free.tflite", verbose=0)
    assert tflite_export.TFLiteModel(tmp_path / "free.tflite").fixed_batch_size is None


def test_recurrent_model_with_a_free_batch_signature_gets_a_clear_error(tmp_path):
    inputs = keras.Input((6, 3))
    model = keras.Model(inputs, keras.layers.GRU(4, name="recurrent")(inputs))
    with pytest.raises(ValueError, match=r"layer 'recurrent' \(GRU\) is recurrent.*batch"):
        tflite_export.export(
            model,
            tmp_path / "free.tflite",
            input_signature=[tf.TensorSpec((None, 6, 3), "float32")],
            verbose=0,
        )
    # Left to itself, export fixes the batch at 1 and the file agrees with Keras.
    report = tflite_export.export(model, tmp_path / "gru.tflite", verbose=0)
    assert report.max_abs_diff < 1e-5
