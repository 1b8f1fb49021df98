import json
import os
import re
import subprocess
import sys
from pathlib import Path

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
            "--quantization int8 needs --calibration FILE.npz",
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


def _export_argv(model, tmp_path, *extra):
    return ["export", str(model), "--out", str(tmp_path / "m.tflite"), *extra]


def test_calibration_of_the_wrong_shape_is_one_line(saved_model, tmp_path, capsys):
    calibration = tmp_path / "calib.npz"
    np.savez(calibration, x=np.zeros((20, 28, 28), "float32"))
    argv = _export_argv(saved_model, tmp_path, "--quantization", "int8", "--calibration")
    assert main([*argv, str(calibration)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err and "Traceback" not in err
    assert re.search(
        r"x has shape \(20, 28, 28\); the input of model 'sequential\w*' has shape "
        r"\(None, 8, 8, 1\)",
        err,
    )
    assert not (tmp_path / "m.tflite").exists()


def test_labels_must_match_the_inputs(saved_model, tmp_path, capsys):
    calibration = tmp_path / "calib.npz"
    np.savez(calibration, x=np.zeros((20, 8, 8, 1), "float32"), y=np.zeros(7))
    assert main([*_export_argv(saved_model, tmp_path, "--calibration"), str(calibration)]) == 2
    assert "y has 7 labels for 20 inputs" in capsys.readouterr().err


@pytest.mark.parametrize("runs", ["-5", "two"])
def test_latency_runs_must_be_a_non_negative_integer(runs, saved_model, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(_export_argv(saved_model, tmp_path, "--latency-runs", runs))
    assert exit_info.value.code == 2
    assert f"--latency-runs: expected an integer >= 0, got '{runs}'" in capsys.readouterr().err


def test_non_finite_weights_are_refused(tmp_path, capsys):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    model.get_layer("d").bias.assign([0.0, float("nan")])
    model.save(tmp_path / "nan.keras")
    assert main(_export_argv(tmp_path / "nan.keras", tmp_path)) == 2
    assert "layer 'd' weight 'd/bias' has 1 non-finite value(s) (NaN)" in capsys.readouterr().err


def _without_tensorflow_logs_setting():
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return env


def test_help_imports_no_tensorflow():
    # `python -m tfcompress --help` as CPython runs it (argv[0] is "-m" while the package
    # loads), then a look at what got imported.
    code = (
        "import runpy, sys\n"
        "sys.argv = ['-m', '--help']\n"
        "sys.orig_argv[:] = [sys.executable, '-m', 'tfcompress', '--help']\n"
        "try:\n"
        "    runpy.run_module('tfcompress', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "heavy = sorted({'tensorflow', 'keras', 'numpy'} & set(sys.modules))\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=_without_tensorflow_logs_setting(),
    )
    assert result.returncode == 0, result.stderr
    assert "export" in result.stdout and "HEAVY []" in result.stdout
    assert result.stderr == ""
    # the real command, with Python's import log
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tfcompress", "export", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_without_tensorflow_logs_setting(),
    )
    assert result.returncode == 0 and "--calibration" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    assert "tfcompress.cli" in imported
    assert not {"tensorflow", "keras", "numpy"} & imported


def test_other_programs_importing_tfcompress_get_every_layer_registered(tmp_path):
    # only the tfcompress command starts lazily: `python -m app` importing it does not
    app = tmp_path / "app"
    app.mkdir()
    (app / "__init__.py").write_text("import tfcompress\n")
    (app / "__main__.py").write_text(
        "import keras, tfcompress\n"
        "print(keras.saving.get_registered_object('tfcompress>QuantDense') is not None)\n"
    )
    env = _without_tensorflow_logs_setting()
    env["PYTHONPATH"] = f"{env['PYTHONPATH']}{os.pathsep}{tmp_path}"
    result = subprocess.run(
        [sys.executable, "-m", "app"], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("True")


def test_export_prints_no_tensorflow_log_noise(saved_model, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tfcompress", *_export_argv(saved_model, tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_without_tensorflow_logs_setting(),
    )
    assert result.returncode == 0, result.stderr
    assert "verified         yes" in result.stdout
    assert result.stderr == ""
