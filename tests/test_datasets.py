import numpy as np
import pytest

from tfcompress.datasets import load_digits


def test_digits_split_shapes_and_ranges():
    data = load_digits()
    assert data.x_train.shape == (1438, 8, 8, 1)
    assert data.x_test.shape == (359, 8, 8, 1)
    assert data.x_train.dtype == np.float32
    assert data.x_train.min() >= 0.0 and data.x_train.max() == 1.0
    assert data.input_shape == (8, 8, 1) and data.num_classes == 10


def test_split_is_stratified_disjoint_and_deterministic():
    a, b = load_digits(), load_digits()
    np.testing.assert_array_equal(a.x_train, b.x_train)
    counts = np.bincount(a.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # ~20% of each class (174-183 per class)
    train_rows = {row.tobytes() for row in a.x_train.reshape(len(a.x_train), -1)}
    overlap = sum(row.tobytes() in train_rows for row in a.x_test.reshape(len(a.x_test), -1))
    assert overlap <= 5  # the raw data has a few duplicate images, never shared indices


def test_flatten_and_bundled_copy_matches_scikit_learn():
    flat = load_digits(flatten=True)
    assert flat.x_train.shape == (1438, 64)
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    reference = sklearn_datasets.load_digits()
    from tfcompress.datasets import _raw_digits

    images, target = _raw_digits()
    np.testing.assert_array_equal(images, reference.images)
    np.testing.assert_array_equal(target, reference.target)
