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


def test_folds_cover_every_image_once_stratified(digits):
    folds = bench.fold_splits(digits, 5)
    everything = np.concatenate([digits.x_test, digits.x_train]).reshape(-1, 64)
    tested = np.concatenate([f.x_test for f in folds]).reshape(-1, 64)
    assert len(tested) == len(everything) == 1797
    key = lambda rows: sorted(r.tobytes() for r in rows)  # noqa: E731
    assert key(tested) == key(everything), "each image is a test image exactly once"
    for fold in folds:
        assert len(fold.x_train) + len(fold.x_test) == 1797
        train_rows = {r.tobytes() for r in fold.x_train.reshape(len(fold.x_train), -1)}
        assert not any(r.tobytes() in train_rows for r in fold.x_test.reshape(-1, 64))
        counts = np.bincount(fold.y_test, minlength=10)
        np.testing.assert_array_less(np.abs(counts - np.bincount(digits.y_test, minlength=10)), 2)


def test_pooled_accuracy_is_the_share_of_all_images_right():
    def run(acc, seed, taught):
        return {
            "student": "s",
            "teacher": taught,
            "seed": seed,
            "accuracy": acc,
            "train_accuracy": 1.0,
            "sparsity": 0.8,
            "seconds": 1.0,
            "params": 7,
        }

    sizes = [300, 100]
    fold_a = [run(0.9, 0, False), run(0.95, 0, True)]
    fold_b = [run(0.5, 0, False), run(0.45, 0, True)]
    pooled = bench.pool_folds([fold_a, fold_b], sizes)
    assert [p["accuracy"] for p in pooled] == pytest.approx([(270 + 50) / 400, (285 + 45) / 400])
    assert pooled[1]["per_fold"] == [0.95, 0.45]
    _alone, taught = bench.summarize(pooled, ["s"])
    assert taught["gain"]["mean"] == pytest.approx(10 / 400)
    assert taught["seeds_up"] == 1


def _check_regime(regime, folds):
    assert regime["chosen"] == [{"temperature": 4.0, "alpha": 0.9}] * folds
    alone, taught = regime["arms"]
    assert (alone["teacher"], taught["teacher"]) == (False, True)
    assert alone["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert taught["gain"]["mean"] == pytest.approx(taught["mean"] - alone["mean"])
    assert taught["seeds_up"] == int(taught["gain"]["mean"] > 0)


def _tiny_argv(out, *extra):
    argv = ["distillation.py", "--epochs", "1", "--seeds", "0", "--select-seeds", "10"]
    argv += ["--teacher-members", "1", "--grid", "4", "0.9", "--out", str(out)]
    return [*argv, "--students", "MLP 400-400 pruned 80%", *extra]


def test_tiny_run_writes_consistent_numbers(tmp_path, monkeypatch):
    out = tmp_path / "distillation.json"
    # The shifted regime here; the original one runs in the cross-validated test below.
    argv = _tiny_argv(out, "--folds", "0", "--student-data", "shifted")
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    result = json.loads(out.read_text())
    assert 0.2 < result["teacher"]["test_accuracy"] <= 1.0
    assert result["protocol"]["evaluation"] == "test split"
    assert set(result["regimes"]) == {"shifted"}
    _check_regime(result["regimes"]["shifted"], folds=1)


def test_tiny_cross_validated_run_scores_every_image_once(tmp_path, monkeypatch, digits):
    out = tmp_path / "distillation.json"
    # An MLP teacher (the fixed-split test above uses the CNN one): this run trains 4 teachers.
    argv = _tiny_argv(out, "--folds", "2", "--student-data", "original", "--teacher", "MLP")
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    result = json.loads(out.read_text())
    sizes = [f["test_images"] for f in result["folds"]]
    assert sizes == [len(f.x_test) for f in bench.fold_splits(digits, 2)] and sum(sizes) == 1797
    regime = result["regimes"]["original"]
    _check_regime(regime, folds=2)
    for pooled, per_fold in zip(regime["runs"], zip(*regime["fold_runs"])):
        expected = (sizes[0] * per_fold[0]["accuracy"] + sizes[1] * per_fold[1]["accuracy"]) / 1797
        assert pooled["accuracy"] == pytest.approx(expected)
        assert round(pooled["accuracy"] * 1797) == pytest.approx(pooled["accuracy"] * 1797)


def test_one_fold_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["distillation.py", "--folds", "1"])
    with pytest.raises(SystemExit):
        bench.main()
    assert "--folds must be 0 (fixed test split) or >= 2, got 1" in capsys.readouterr().err
