"""The small, offline data sets that the demo, tests and benchmarks use.

tfcompress ships scikit-learn's copy of the UCI optical digits data (1,797 grey
8x8 images of the digits 0-9, values 0-16) as ``tfcompress/data/digits.npz``,
and a text corpus for the language-model workload: the 168 top-level modules of
the CPython 3.11.7 standard library (4.7 MB of Python source, PSF license in
``tfcompress/data/stdlib_corpus.LICENSE.txt``), xz-compressed. Nothing is
downloaded at run time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import json
import lzma

import numpy as np

__all__ = ["Split", "TextCorpus", "load_digits", "load_text_corpus"]

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


@dataclasses.dataclass(frozen=True)
class TextCorpus:
    """A byte corpus with a training and a held-out split.

    Attributes:
        train: Training text as a uint8 array of bytes.
        test: Held-out text as a uint8 array of bytes (whole files never seen
            in training).
        manifest: The corpus manifest: source, license, files and their split.
    """

    train: np.ndarray
    test: np.ndarray
    manifest: dict


def load_text_corpus() -> TextCorpus:
    """Loads the bundled CPython standard-library corpus (bytes, with a file-level split).

    The 168 files of ``Lib/*.py`` in CPython 3.11.7, sorted by name; every
    tenth file is held out (16 files, 413,554 bytes), the other 152
    (4,285,166 bytes) are training text. Each split is checked against the
    SHA-256 in the manifest before it is returned.

    Returns:
        A :class:`TextCorpus`.

    Raises:
        tfcompress.UnreadableFileError: A split does not match its checksum.

    Example:
        >>> corpus = tfcompress.datasets.load_text_corpus()
        >>> corpus.train.dtype, len(corpus.test)
        (dtype('uint8'), 413554)
    """
    from tfcompress.core.io import UnreadableFileError

    folder = importlib.resources.files("tfcompress") / "data"
    manifest = json.loads((folder / "stdlib_corpus.json").read_text(encoding="utf-8"))
    splits = {}
    for split in ("train", "test"):
        resource = folder / f"stdlib_corpus.{split}.xz"
        try:
            text = lzma.decompress(resource.read_bytes())
        except lzma.LZMAError as error:
            raise UnreadableFileError(str(resource), f"not a valid xz stream ({error})") from error
        expected = manifest["splits"][split]["sha256"]
        if hashlib.sha256(text).hexdigest() != expected:
            raise UnreadableFileError(
                str(resource), f"SHA-256 differs from the manifest's {expected}"
            )
        splits[split] = np.frombuffer(text, dtype=np.uint8)
    return TextCorpus(splits["train"], splits["test"], manifest)
