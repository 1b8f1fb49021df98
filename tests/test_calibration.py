"""The calibration-data normaliser: every accepted form, shape checks naming both shapes, caps."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcompress.core.calibration import CalibrationData, calibration_data, model_input_structure


def _image_model():
    inputs = keras.Input((8, 8, 1), name="image")
    return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)), name="cnn")


def _dict_model():
    ids = keras.Input((5,), dtype="int32", name="token_ids")
    mask = keras.Input((5,), name="padding_mask")
    x = keras.layers.Embedding(10, 4)(ids) * mask[:, :, None]
    return keras.Model({"token_ids": ids, "padding_mask": mask}, x, name="text")


def _list_model():
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    return keras.Model([a, b], keras.layers.Concatenate()([a, b]), name="pair")


X = np.arange(70 * 64, dtype="float64").reshape(70, 8, 8, 1) / 1000


@pytest.mark.parametrize(
    "make",
    [
        lambda: X,
        lambda: tf.constant(X),
        lambda: tf.data.Dataset.from_tensor_slices(X).batch(16),
        lambda: tf.data.Dataset.from_tensor_slices((X, np.zeros(70))).batch(16),  # (x, y)
        lambda: tf.data.Dataset.from_tensor_slices(X),  # unbatched examples
        lambda: (X[i : i + 10] for i in range(0, 70, 10)),  # a generator
        lambda: [X[:30], X[30:]],  # a list of batches
        lambda: lambda: iter([X[:35], X[35:]]),  # TFLite's representative_dataset style
    ],
)
def test_every_form_gives_the_same_float32_arrays(make):
    calib = calibration_data(make(), _image_model())
    assert calib.num_samples == 70 and calib.arrays[0].dtype == np.float32
    np.testing.assert_array_equal(calib.inputs(), X.astype("float32"))


def test_sample_cap_stops_reading_an_endless_dataset():
    endless = tf.data.Dataset.from_tensor_slices(X).batch(16).repeat()
    calib = calibration_data(endless, _image_model(), max_samples=40)
    assert calib.num_samples == 40
    assert [len(b[0]) for b in calib.batches(16)] == [16, 16, 8]


def test_dict_inputs_in_model_structure_and_dtypes():
    model = _dict_model()
    data = {"token_ids": np.ones((6, 5), "float64"), "padding_mask": np.ones((6, 5), "int64")}
    calib = calibration_data(data, model)
    inputs = calib.inputs(4)
    assert sorted(inputs) == ["padding_mask", "token_ids"]
    assert inputs["token_ids"].dtype == np.int32 and inputs["padding_mask"].dtype == np.float32
    assert inputs["token_ids"].shape == (4, 5)
    batches = tf.data.Dataset.from_tensor_slices(data).batch(4)
    assert calibration_data(batches, model).num_samples == 6
    structured = list(calib.input_batches(4))
    assert [b["token_ids"].shape for b in structured] == [(4, 5), (2, 5)]
    assert model(structured[0]).shape == (4, 5, 4)


def test_list_model_takes_a_list_or_a_dict_of_input_names():
    model = _list_model()
    x = [np.zeros((4, 3)), np.ones((4, 2))]
    assert calibration_data(x, model).num_samples == 4
    by_name = calibration_data({"a": x[0], "b": x[1]}, model)
    np.testing.assert_array_equal(by_name.flat()[1], np.ones((4, 2), "float32"))


@pytest.mark.parametrize(
    ("make_model", "data", "error", "message"),
    [
        (
            _image_model,
            np.zeros((10, 28, 28)),
            ValueError,
            r"representative_data has shape \(10, 28, 28\); the input of model 'cnn' has shape "
            r"\(None, 8, 8, 1\)",
        ),
        (_image_model, "x_train.npz", TypeError, r"got str 'x_train.npz'.*np.load"),
        (_image_model, np.zeros((0, 8, 8, 1)), ValueError, "is empty"),
        (_image_model, np.full((2, 8, 8, 1), np.nan), ValueError, "128 NaN/Inf"),
        (_image_model, np.array([["a"] * 64] * 2).reshape(2, 8, 8, 1), TypeError, "dtype <U1"),
        (
            _dict_model,
            {"token_ids": np.zeros((2, 5))},
            ValueError,
            r"has keys \['token_ids'\]; model 'text' takes \['padding_mask', 'token_ids'\]",
        ),
        (
            _dict_model,
            {"token_ids": np.zeros((2, 5)), "padding_mask": np.zeros((2, 7))},
            ValueError,
            r"representative_data\['padding_mask'\] has shape \(2, 7\); input 'padding_mask' of "
            r"model 'text' has shape \(None, 5\)",
        ),
        (_list_model, [np.zeros((4, 3)), np.zeros((5, 2))], ValueError, r"\(4, 5\)"),
        (_image_model, 3.5, TypeError, "got float"),
    ],
)
def test_errors_name_the_argument_and_both_shapes(make_model, data, error, message):
    with pytest.raises(error, match=message):
        calibration_data(data, make_model(), argument="representative_data")


def test_model_input_structure_and_passthrough():
    assert isinstance(model_input_structure(_dict_model()), dict)
    assert not isinstance(model_input_structure(_image_model()), (list, dict))
    with pytest.raises(ValueError, match="no defined inputs"):
        model_input_structure(keras.Sequential([keras.layers.Dense(2)]))
    calib = calibration_data(X, _image_model())
    again = calibration_data(calib, _image_model(), max_samples=5)
    assert isinstance(again, CalibrationData) and again.num_samples == 5
