"""The shared layer helper must pass good layers and catch broken ones."""

import keras
import pytest
from layer_checks import check_layer


def test_passes_a_stock_dense_layer(tmp_path):
    result = check_layer(lambda: keras.layers.Dense(3, name="ok"), (4, 5), tmp_path)
    assert result.outputs.shape == (4, 3)


@keras.saving.register_keras_serializable(package="tests")
class ForgetfulDense(keras.layers.Dense):
    """Scales its output but forgets `scale` in get_config."""

    def __init__(self, units, scale=1.0, **kwargs):
        super().__init__(units, **kwargs)
        self.scale = scale

    def call(self, inputs, training=None):
        return super().call(inputs) * self.scale


@keras.saving.register_keras_serializable(package="tests")
class FrozenDense(keras.layers.Dense):
    """Its output does not depend on its weights (no gradient reaches them)."""

    def call(self, inputs, training=None):
        return keras.ops.stop_gradient(super().call(inputs))


def test_catches_an_incomplete_get_config(tmp_path):
    with pytest.raises(AssertionError, match="different outputs"):
        check_layer(lambda: ForgetfulDense(3, scale=2.0), (4, 5), tmp_path)


def test_catches_a_layer_whose_weights_never_train(tmp_path):
    with pytest.raises(AssertionError, match="changed no trainable weight"):
        check_layer(lambda: FrozenDense(3), (4, 5), tmp_path)
