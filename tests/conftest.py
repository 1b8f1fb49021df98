import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import pytest

from tfcompress.datasets import load_digits
from tfcompress.models import digits_cnn, train_classifier

BACKEND = keras.backend.backend()


def pytest_collection_modifyitems(config, items):
    """Under a backend other than TensorFlow only the tests marked ``jax`` run.

    ``python3 run.py test`` runs them in a second process with KERAS_BACKEND=jax
    (``-m jax``); this skip keeps a bare ``KERAS_BACKEND=jax pytest`` clean too.
    """
    if BACKEND == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"TensorFlow-only test (not in the {BACKEND} subset)")
    for item in items:
        if item.get_closest_marker("jax") is None:
            item.add_marker(skip)


@pytest.fixture
def tensorflow_only():
    """Skips a test (or a parametrized case) that needs the TensorFlow backend."""
    if BACKEND != "tensorflow":
        pytest.skip(f"needs the TensorFlow backend, Keras runs on {BACKEND!r}")


@pytest.fixture
def non_tensorflow_backend(monkeypatch):
    """Makes Keras report a backend other than TensorFlow (a no-op under JAX).

    On the TensorFlow run this exercises the TF-only guards without a second
    backend; on the JAX run the guards meet the real thing.
    """
    if BACKEND == "tensorflow":
        monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    return "jax" if BACKEND == "tensorflow" else BACKEND


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


@pytest.fixture(scope="session")
def compiled_available():
    """Builds the packed-binary kernels once (cached on disk across runs); False without a compiler."""
    from tfcompress.kernels.tf import build as _build

    if _build.kernels_disabled():
        return False
    return _build.load() is not None


@pytest.fixture(params=["compiled", "fallback"])
def kernel_path(request, compiled_available, monkeypatch):
    """Runs a test on the compiled kernels and on the pure-TF fallback (forced by env variable)."""
    from tfcompress.kernels.tf import build as _build
    from tfcompress.ops import tf as tops

    if BACKEND != "tensorflow":
        pytest.skip("custom TensorFlow ops need the TensorFlow backend")
    if request.param == "compiled":
        if not compiled_available:
            pytest.skip(f"compiled kernels unavailable: {_build.failure_reason()}")
        assert tops.has_compiled_kernels()
    else:
        monkeypatch.setenv(_build.ENV_DISABLE, "1")
        assert not tops.has_compiled_kernels()
    return request.param
