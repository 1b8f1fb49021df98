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


@keras.saving.register_keras_serializable(package="tests")
class WrongShapeDense(keras.layers.Dense):
    """Claims one more output unit than it returns."""

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units + 1)


@keras.saving.register_keras_serializable(package="tests")
class ExtraWeightDense(keras.layers.Dense):
    """Creates a weight only when built by hand (not after from_config)."""

    def __init__(self, units, extra=True, **kwargs):
        super().__init__(units, **kwargs)
        self.extra = extra

    def build(self, input_shape):
        super().build(input_shape)
        if self.extra:
            self.add_weight(shape=(), initializer="zeros", name="extra", trainable=False)

    def get_config(self):
        return {**super().get_config(), "extra": False}  # the bug: forgets the real value


def test_catches_a_wrong_compute_output_shape(tmp_path):
    with pytest.raises(AssertionError, match=r"compute_output_shape\(\(4, 5\)\) = \(4, 4\)"):
        check_layer(lambda: WrongShapeDense(3), (4, 5), tmp_path)


def test_catches_a_different_weight_count_after_from_config(tmp_path):
    with pytest.raises(AssertionError, match=r"after from_config has .* weights \(2, 2, 0\)"):
        check_layer(lambda: ExtraWeightDense(3), (4, 5), tmp_path)
