"""The small, offline data set that the demo, tests and benchmarks use.

tfcompress ships scikit-learn's copy of the UCI optical digits data (1,797 grey
8x8 images of the digits 0-9, values 0-16) as ``tfcompress/data/digits.npz``, so
nothing is downloaded at run time.
"""

from __future__ import annotations

import dataclasses
import importlib.resources

import numpy as np

__all__ = ["Split", "load_digits"]

NUM_CLASSES = 10
_TEST_FRACTION = 0.2


@dataclasses.dataclass(frozen=True)
class Split:
    """A train/test split of a data set.

    Attributes:
        x_train: Training inputs.
        y_train: Integer training labels.
        x_test: Test inputs.
        y_test: Integer test labels.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    resource = importlib.resources.files("tfcompress") / "data" / "digits.npz"
    with resource.open("rb") as f, np.load(f) as archive:
        return archive["images"], archive["target"]


def load_digits(flatten: bool = False, seed: int = 0) -> Split:
    """Loads the bundled digits data set with a fixed, stratified 80/20 split.

    Pixels are scaled to [0, 1] as float32. Images have shape ``(8, 8, 1)``
    (channels last), or ``(64,)`` with ``flatten=True``.

    Args:
        flatten: Return each image as a 64-vector instead of an 8x8x1 image.
        seed: Seed of the split's permutation; the default split is the one
            every tfcompress benchmark and test reports on.

    Returns:
        A :class:`Split` with 1,438 training and 359 test examples.

    Example:
        >>> data = tfcompress.datasets.load_digits()
        >>> data.x_train.shape, data.x_test.shape
        ((1438, 8, 8, 1), (359, 8, 8, 1))
    """
    images, target = _raw_digits()
    x = (images.astype(np.float32) / 16.0)[..., None]
    if flatten:
        x = x.reshape(len(x), -1)
    y = target.astype(np.int64)

    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for label in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_test = round(len(idx) * _TEST_FRACTION)
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    train = rng.permutation(np.concatenate(train_idx))
    test = np.sort(np.concatenate(test_idx))
    return Split(x[train], y[train], x[test], y[test])
