"""Export refuses bad input with one clear message, before converting or writing anything."""

import keras
import numpy as np
import pytest

from tfcompress.tflite_export import convert, export


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.Dense(10, name="logits")(keras.layers.Flatten()(x))
    return keras.Model(inputs, x, name="small")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weights_are_refused_before_converting(value, tmp_path):
    model = _model()
    kernel = model.get_layer("logits").kernel
    broken = kernel.numpy()
    broken[3, 2] = value
    kernel.assign(broken)
    with pytest.raises(ValueError, match=r"layer 'logits' weight 'logits/kernel' has 1 non-finite"):
        export(model, tmp_path / "m.tflite", verbose=0)
    assert not (tmp_path / "m.tflite").exists()
    with pytest.raises(ValueError, match="non-finite"):
        convert(model, verbose=0)


def test_non_finite_outputs_fail_verification(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.ops.log(keras.layers.Dense(3)(inputs)))  # log(<0) = NaN
    with pytest.warns(RuntimeWarning, match="verification failed"):
        report = export(model, tmp_path / "m.tflite", verify_data=-np.ones((8, 4)), verbose=0)
    assert report.verified is False and "NaN/Inf" in report.verify_error
    assert report.max_abs_diff is None and report.top1_agreement is None
    assert "verify_error" in str(report)


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (
            np.zeros((20, 28, 28, 1), "float32"),
            ValueError,
            r"representative_data has shape \(20, 28, 28, 1\); the input of model 'small' has shape "
            r"\(None, 8, 8, 1\)",
        ),
        ("calib.npz", TypeError, r"representative_data must be model inputs.*got str"),
    ],
)
def test_wrong_representative_data_is_named_not_blamed_on_int8_kernels(
    data, error, message, tmp_path
):
    with pytest.raises(error, match=message):
        export(_model(), tmp_path / "m.tflite", quantization="int8", representative_data=data)
    assert not (tmp_path / "m.tflite").exists()


def test_wrong_verify_data_shape_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"verify_data has shape \(3, 5\)"):
        export(_model(), tmp_path / "m.tflite", verify_data=np.zeros((3, 5)), verbose=0)


def test_a_keras_file_path_is_loaded(tmp_path):
    model = _model()
    model.save(tmp_path / "small.keras")
    x = np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype("float32")
    report = export(str(tmp_path / "small.keras"), tmp_path / "m.tflite", verify_data=x, verbose=0)
    assert report.verified and report.max_abs_diff < 1e-5


@pytest.mark.parametrize(
    ("model", "error", "message"),
    [
        ("model.h5", ValueError, r"model='model.h5' is not a .keras file; expected a keras.Model"),
        ("{tmp}/none.keras", ValueError, "no such .keras file"),
        (np.zeros(3), TypeError, "model must be a keras.Model or a path to a .keras file, got"),
    ],
)
def test_not_a_model(model, error, message, tmp_path):
    if isinstance(model, str):
        model = model.format(tmp=tmp_path)
    with pytest.raises(error, match=message):
        export(model, tmp_path / "m.tflite", verbose=0)


@pytest.mark.parametrize(
    ("argument", "value"),
    [("latency_runs", -5), ("max_verify_samples", 0), ("calibration_samples", 0)],
)
def test_negative_counts_are_refused(argument, value, tmp_path):
    with pytest.raises(ValueError, match=rf"{argument} must be an integer >= \d, got {value}"):
        export(_model(), tmp_path / "m.tflite", verbose=0, **{argument: value})
    assert not (tmp_path / "m.tflite").exists()


def test_calibration_progress_ends_at_the_samples_used(tmp_path, capsys):
    x = np.random.default_rng(0).uniform(size=(359, 8, 8, 1)).astype("float32")
    export(
        _model(),
        tmp_path / "m.tflite",
        quantization="int8",
        representative_data=x,
        calibration_samples=500,
        verbose=1,
    )
    out = capsys.readouterr().out
    assert "359/359" in out and "/500" not in out
