"""benchmarks/distillation.py: its augmentation and split against NumPy, and a tiny full run."""

import json
import sys

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import distillation as bench


def test_shift_moves_each_image_by_at_most_one_pixel_with_zero_fill():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 1.0, size=(200, 8, 8, 1)).astype("float32")
    tf.random.set_seed(0)
    shifted, labels = bench._shift(tf.constant(x), tf.range(200))
    shifted = shifted.numpy()
    np.testing.assert_array_equal(labels.numpy(), np.arange(200))
    seen = set()
    for image, out in zip(x, shifted):
        matches = []
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                padded = np.pad(image, ((1, 1), (1, 1), (0, 0)))
                expected = padded[1 - dr : 9 - dr, 1 - dc : 9 - dc]
                if np.array_equal(out, expected):
                    matches.append((dr, dc))
        assert len(matches) == 1, "every output is exactly one of the 9 shifts, zero-filled"
        seen.add(matches[0])
    assert len(seen) == 9, f"all 9 shifts occur over 200 images, saw {sorted(seen)}"


def test_validation_split_is_stratified_and_disjoint(digits):
    val = bench.split_off_validation(digits)
    assert len(val.x_train) + len(val.x_test) == len(digits.x_train)
    for label in range(10):
        share = np.mean(val.y_test == label) / np.mean(digits.y_train == label)
        assert 0.9 < share < 1.1
    rows = {r.tobytes() for r in val.x_train.reshape(len(val.x_train), -1)}
    assert not any(r.tobytes() in rows for r in val.x_test.reshape(len(val.x_test), -1))


def test_tiny_run_writes_consistent_numbers(tmp_path, monkeypatch):
    out = tmp_path / "distillation.json"
    argv = ["distillation.py", "--epochs", "2", "--seeds", "0", "--select-seeds", "10"]
    argv += ["--teacher-members", "1", "--grid", "4", "0.9", "--out", str(out)]
    argv += ["--students", "MLP 400-400 pruned 80%", "--student-data", "original", "shifted"]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    result = json.loads(out.read_text())
    assert 0.5 < result["teacher"]["test_accuracy"] <= 1.0
    assert set(result["regimes"]) == {"original", "shifted"}
    for regime in result["regimes"].values():
        assert regime["chosen"] == {"temperature": 4.0, "alpha": 0.9}
        alone, taught = regime["arms"]
        assert (alone["teacher"], taught["teacher"]) == (False, True)
        assert alone["sparsity"] == pytest.approx(0.8, abs=0.01)
        assert taught["gain"]["mean"] == pytest.approx(taught["mean"] - alone["mean"])
        assert taught["seeds_up"] == int(taught["gain"]["mean"] > 0)
