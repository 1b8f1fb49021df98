import json

from tfcompress.demo import discover, run_demo


def test_discovers_the_baselines_first():
    names = [t.name for t in discover()]
    assert names[:4] == ["float32", "float16 PTQ", "dynamic-range PTQ", "int8 PTQ"]
    assert len(names) == len(set(names))


def test_demo_runs_end_to_end(tmp_path, capsys):
    rows = run_demo(tmp_path, epochs=2, fine_tune_epochs=1, techniques=["float32", "int8 PTQ"])
    assert [r.technique for r in rows] == ["float32", "int8 PTQ"]
    assert all(r.error is None for r in rows)
    assert rows[0].ratio_to_float == 1.0 and rows[1].ratio_to_float < 0.3
    assert all(r.tflite_accuracy is not None and r.latency_ms > 0 for r in rows)
    out = capsys.readouterr().out
    assert "technique" in out and "int8 PTQ" in out
    assert json.loads((tmp_path / "results.json").read_text())[1]["technique"] == "int8 PTQ"
    assert (tmp_path / "size_vs_accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_unknown_technique_is_refused(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="unknown technique"):
        run_demo(tmp_path, techniques=["magic"])
