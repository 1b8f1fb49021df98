"""The CLI's two file loaders: a damaged .keras file and a calibration file that is not .npz."""

import zipfile

import keras
import numpy as np
import pytest

from tfcompress.cli import main


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli_files") / "small.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")]).save(path)
    return path


def _damaged_keras_files(saved_model, folder):
    data = saved_model.read_bytes()
    info = zipfile.ZipFile(saved_model).getinfo("config.json")
    flipped = bytearray(data)
    flipped[info.header_offset + 30 + len(info.filename) + 5] ^= 0x20
    no_config = folder / "no_config.keras"
    with zipfile.ZipFile(no_config, "w") as archive:
        archive.writestr("metadata.json", "{}")
    files = {
        "text.keras": (b"this is not a model", "it is not a zip archive"),
        "cut.keras": (data[: len(data) // 2], "it is not a zip archive"),
        "crc.keras": (bytes(flipped), "member 'config.json' fails its CRC-32 check"),
    }
    for name, (content, _) in files.items():
        (folder / name).write_bytes(content)
    reasons = {folder / name: reason for name, (_, reason) in files.items()}
    reasons[no_config] = "has no config.json"
    return reasons


@pytest.mark.parametrize("command", ["summary", "export"])
def test_a_damaged_keras_file_is_named_as_such(command, saved_model, tmp_path, capsys):
    for path, reason in _damaged_keras_files(saved_model, tmp_path).items():
        argv = [command, str(path)] + (
            ["--out", str(tmp_path / "m.tflite")] if command == "export" else []
        )
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"could not load {str(path)!r}: it is not a valid .keras file: " in err, err
        assert reason in err and "File not found" not in err and "Traceback" not in err


def test_a_calibration_file_that_is_not_npz_says_what_is_expected(saved_model, tmp_path, capsys):
    np.save(tmp_path / "inputs.npy", np.ones((3, 4), "float32"))
    (tmp_path / "inputs.csv").write_text("1,2,3,4\n")
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}, None], dtype=object))
    expected = "expected a NumPy .npz archive (numpy.savez) with the inputs under 'x'"
    for name, reason in [
        ("inputs.npy", "it is not a .npz file"),
        ("inputs.csv", "it is not a .npz file"),
        ("objects.npz", "it holds object arrays, which are never loaded"),
    ]:
        path = tmp_path / name
        argv = ["export", str(saved_model), "--out", str(tmp_path / "m.tflite")]
        assert main([*argv, "--calibration", str(path)]) == 2
        err = capsys.readouterr().err
        assert f"could not read --calibration {str(path)!r}: {reason}" in err, err
        assert expected in err
        assert "allow_pickle" not in err and "unsafe" not in err and "Traceback" not in err
    assert not (tmp_path / "m.tflite").exists()
