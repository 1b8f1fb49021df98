"""The shared serialization check must pass a good object and catch each kind of broken one."""

from __future__ import annotations

import keras
import pytest
from serialization_checks import check_layer_serialization, check_serialization


class Good:
    def __init__(self, rate=0.5):
        self.rate = rate

    def get_config(self):
        return {"rate": self.rate}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfcompress_test")
class Registered(Good):
    pass


@keras.saving.register_keras_serializable(package="tfcompress_test")
class Forgetful(Good):
    @classmethod
    def from_config(cls, config):
        return cls()  # the bug: ignores the config


@keras.saving.register_keras_serializable(package="tfcompress_test")
class NoFromConfig:
    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package="tfcompress_test")
class NotJson(Good):
    def get_config(self):
        return {"rate": object()}


def test_passes_a_registered_symmetric_object():
    rebuilt, restored = check_serialization(Registered(0.25), package="tfcompress_test")
    assert rebuilt.rate == restored.rate == 0.25


def test_catches_a_class_registered_under_another_package():
    with pytest.raises(AssertionError, match="registered as 'tfcompress_test>Registered'"):
        check_serialization(Registered(0.25), package="tfcompress")


def test_catches_an_unregistered_class():
    with pytest.raises(AssertionError, match="registered as 'Good', expected 'tfcompress>Good'"):
        check_serialization(Good(0.25))


def test_catches_an_asymmetric_config():
    with pytest.raises(AssertionError, match="get_config -> from_config -> get_config differs"):
        check_serialization(Forgetful(0.25), package="tfcompress_test")


def test_catches_a_missing_from_config():
    with pytest.raises(AttributeError, match="from_config"):
        check_serialization(NoFromConfig(), package="tfcompress_test")


def test_catches_a_config_that_is_not_json():
    with pytest.raises(AssertionError, match="get_config\\(\\) is not JSON-able"):
        check_serialization(NotJson(), package="tfcompress_test")


def test_layer_check_passes_a_stock_layer_and_catches_a_wrong_shape():
    layer = check_layer_serialization(lambda: keras.layers.Dense(3), (2, 4), package=None)
    assert len(layer.weights) == 2

    class Wrong(keras.layers.Dense):
        def compute_output_shape(self, input_shape):
            return (*input_shape[:-1], 7)

    with pytest.raises(AssertionError, match=r"compute_output_shape\(\(2, 4\)\) = \(2, 7\)"):
        check_layer_serialization(lambda: Wrong(3), (2, 4), package=None)
