"""The model zoo's training helper reports progress by default."""

from __future__ import annotations

import numpy as np

from tfcompress.datasets import Split
from tfcompress.models import digits_cnn, train_classifier


def test_train_classifier_prints_one_line_per_epoch(capsys):
    rng = np.random.default_rng(0)
    x = rng.random((16, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, 16)
    data = Split(x, y, x, y)
    train_classifier(digits_cnn(), data, epochs=2, batch_size=8)
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out
    train_classifier(digits_cnn(), data, epochs=1, batch_size=8, verbose=0)
    assert "Epoch" not in capsys.readouterr().out
