import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import pytest

from tfcompress.datasets import load_digits
from tfcompress.models import digits_cnn, train_classifier


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield


@pytest.fixture(scope="session")
def digits():
    return load_digits()


@pytest.fixture(scope="session")
def trained_digits_cnn(digits):
    """The digits CNN trained once per test session (float baseline, ~97% accuracy)."""
    keras.utils.set_random_seed(1)
    model = digits_cnn()
    train_classifier(model, digits, epochs=8)
    return model
