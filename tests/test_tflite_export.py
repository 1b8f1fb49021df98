import gzip
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcompress as tfc
from tfcompress.tflite_export import TFLiteModel, export


@pytest.fixture(scope="module")
def reports(trained_digits_cnn, digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    result = {}
    for mode in (None, "dynamic", "float16", "int8"):
        result[mode] = export(
            trained_digits_cnn,
            out / f"digits_{mode}.tflite",
            quantization=mode,
            representative_data=digits.x_train if mode == "int8" else None,
            verify_data=digits.x_test,
            verify_labels=digits.y_test,
            verbose=0,
        )
    return result


def test_float_export_matches_keras(reports, digits):
    report = reports[None]
    assert report.verified and report.verify_samples == len(digits.x_test)
    assert report.top1_agreement == 1.0
    assert report.max_abs_diff < 1e-4
    assert report.tflite_accuracy == report.keras_accuracy > 0.93


@pytest.mark.parametrize("mode", ["dynamic", "float16", "int8"])
def test_quantized_exports_agree_and_shrink(reports, mode):
    report, float_report = reports[mode], reports[None]
    assert report.top1_agreement >= 0.98, report
    assert report.bytes < float_report.bytes
    assert report.gzip_bytes == len(gzip.compress(Path(report.path).read_bytes(), 9))


def test_int8_is_full_integer_and_under_030x_float(reports):
    int8, float32 = reports["int8"], reports[None]
    assert int8.bytes <= 0.3 * float32.bytes, (int8.bytes, float32.bytes)
    assert int8.op_counts.get("CONV_2D[int8]") == 3
    assert int8.op_counts.get("FULLY_CONNECTED[int8]") == 2
    assert not any(k.startswith(("CONV_2D[f", "FULLY_CONNECTED[f")) for k in int8.op_counts)


def test_report_is_printable_and_serializable(reports):
    text = str(reports["int8"])
    assert "top1_agreement" in text and "CONV_2D[int8]" in text
    assert reports["int8"].as_dict()["quantization"] == "int8"


def test_tflite_model_predicts_in_batches(reports, trained_digits_cnn, digits):
    lite = TFLiteModel(reports[None].path)
    x = digits.x_test[:70]
    np.testing.assert_allclose(
        lite.predict(x, batch_size=16), trained_digits_cnn.predict(x, verbose=0), atol=1e-4
    )
    assert lite.latency_ms(x, runs=3, warmup=1) > 0


def test_multi_input_multi_output_model(tmp_path):
    a, b = keras.Input((4,)), keras.Input((3,))
    h = keras.layers.Dense(5)(keras.layers.Concatenate()([a, b]))
    model = keras.Model([a, b], [h, keras.layers.Dense(2)(h)])
    rng = np.random.default_rng(0)
    data = [rng.random((20, 4), dtype=np.float32), rng.random((20, 3), dtype=np.float32)]
    report = export(model, tmp_path / "two.tflite", verify_data=data, verbose=0)
    assert report.max_abs_diff < 1e-5
    outputs = TFLiteModel(report.path).predict(data)
    assert [o.shape for o in outputs] == [(20, 5), (20, 2)]


def test_random_verification_when_no_data(tmp_path):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    report = export(model, tmp_path / "r.tflite", verbose=0)
    assert report.verify_source == "random" and report.verify_samples == 64
    assert report.max_abs_diff < 1e-5


def test_subclassed_model_with_explicit_signature(tmp_path):
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 5), "float32"))
    with pytest.raises(ValueError, match="no defined inputs"):
        export(net, tmp_path / "n.tflite", verbose=0)
    report = export(
        net,
        tmp_path / "n.tflite",
        input_signature=[tf.TensorSpec((None, 5), tf.float32)],
        verbose=0,
    )
    assert report.max_abs_diff < 1e-5


class TestErrors:
    model = None

    @pytest.fixture(autouse=True)
    def _model(self):
        self.model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])

    def test_missing_directory(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            export(self.model, tmp_path / "missing" / "m.tflite", verbose=0)

    def test_unknown_quantization(self, tmp_path):
        with pytest.raises(ValueError, match=r"quantization='int3' is not supported.*'int8'"):
            export(self.model, tmp_path / "m.tflite", quantization="int3", verbose=0)
        assert not (tmp_path / "m.tflite").exists()

    def test_int8_without_representative_data(self, tmp_path):
        with pytest.raises(ValueError, match="needs representative_data"):
            export(self.model, tmp_path / "m.tflite", quantization="int8", verbose=0)

    def test_model_without_inputs(self, tmp_path):
        unbuilt = keras.Sequential([keras.layers.Dense(3)])
        with pytest.raises(ValueError, match="no defined inputs"):
            export(unbuilt, tmp_path / "m.tflite", verbose=0)

    def test_labels_without_data(self, tmp_path):
        with pytest.raises(ValueError, match="verify_labels"):
            export(self.model, tmp_path / "m.tflite", verify_labels=np.zeros(3), verbose=0)


def test_public_convert_returns_flatbuffer():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    flatbuffer = tfc.tflite_export.convert(model, quantization="dynamic", verbose=0)
    assert flatbuffer[4:8] == b"TFL3"
