import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfcompress.cli import main


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "small.keras"
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, name="c"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, name="d"),
        ]
    )
    model.save(path)
    return path


def test_summary_table_and_json(saved_model, capsys):
    assert main(["summary", str(saved_model)]) == 0
    assert "Conv2D" in capsys.readouterr().out
    assert main(["summary", str(saved_model), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total_params"] == 4 * 9 + 4 + 144 * 10 + 10


def test_export_int8_with_calibration(saved_model, tmp_path, digits, capsys):
    calibration = tmp_path / "calib.npz"
    np.savez(calibration, x=digits.x_train[:100], y=digits.y_train[:100])
    out = tmp_path / "m.tflite"
    code = main(
        [
            "export",
            str(saved_model),
            "--out",
            str(out),
            "--quantization",
            "int8",
            "--calibration",
            str(calibration),
            "--latency-runs",
            "2",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert out.stat().st_size > 0 and "top1_agreement" in text and "CONV_2D[int8]" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["summary", "{missing}"], "does not exist"),
        (["summary", "{corrupt}"], "could not load"),
        (
            ["export", "{model}", "--out", "{tmp}/m.tflite", "--quantization", "int3"],
            "quantization='int3' is not supported",
        ),
        (
            ["export", "{model}", "--out", "{tmp}/m.tflite", "--quantization", "int8"],
            "needs representative_data",
        ),
        (["export", "{model}", "--out", "{tmp}/no/such/dir/m.tflite"], "does not exist"),
        (
            ["export", "{model}", "--out", "{tmp}/m.tflite", "--calibration", "{corrupt}"],
            "could not read --calibration",
        ),
    ],
)
def test_clear_errors(argv, message, saved_model, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip archive")
    values = {
        "missing": str(tmp_path / "none.keras"),
        "corrupt": str(corrupt),
        "model": str(saved_model),
        "tmp": str(tmp_path),
    }
    assert main([a.format(**values) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err
    assert "Traceback" not in err


def test_help_is_available_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "tfcompress", "export", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    assert "--calibration" in result.stdout and "int8" in result.stdout
