"""core.batchnorm: BatchNorm statistics re-estimated on calibration data, restored afterwards."""

import keras
import numpy as np
import pytest

from tfcompress.core.batchnorm import batchnorm_layers, recalibrated_batchnorm, reestimate_batchnorm


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(4, name="dense"),
            keras.layers.BatchNormalization(momentum=0.99, name="bn"),
            keras.layers.Dense(2, name="out"),
        ]
    )


def test_statistics_are_those_of_the_calibration_inputs_inside_the_block_only():
    model = _model()
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(300, 6)).astype("float32")
    bn = model.get_layer("bn")
    before = [v.numpy().copy() for v in model.non_trainable_variables]
    hidden = x @ model.get_layer("dense").kernel.numpy() + model.get_layer("dense").bias.numpy()
    batches = [x[i : i + 100] for i in range(0, 300, 100)]
    with recalibrated_batchnorm(model, batches) as count:
        assert count == 1
        # the mean of three batch means is the mean; variances average per batch
        np.testing.assert_allclose(bn.moving_mean.numpy(), hidden.mean(0), rtol=1e-4, atol=1e-4)
        expected_var = np.mean([hidden[i : i + 100].var(0) for i in range(0, 300, 100)], 0)
        np.testing.assert_allclose(bn.moving_variance.numpy(), expected_var, rtol=1e-3)
        assert bn.momentum == 0.99  # the layer's own momentum as soon as the statistics are set
    assert bn.momentum == 0.99
    for old, new in zip(before, model.non_trainable_variables):
        np.testing.assert_array_equal(old, new.numpy())


def test_restored_on_error_and_a_model_without_batchnorm_is_untouched():
    model = _model()
    before = [v.numpy().copy() for v in model.non_trainable_variables]
    x = np.ones((8, 6), "float32")
    with pytest.raises(RuntimeError), recalibrated_batchnorm(model, [x]):
        raise RuntimeError("boom")
    for old, new in zip(before, model.non_trainable_variables):
        np.testing.assert_array_equal(old, new.numpy())
    plain = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    calls = []
    with recalibrated_batchnorm(plain, (calls.append(1) or x for _ in range(3))) as count:
        assert count == 0
    assert calls == [] and batchnorm_layers(plain) == []


def test_reestimated_statistics_stay():
    model = _model()
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(200, 6)).astype("float32")
    hidden = x @ model.get_layer("dense").kernel.numpy() + model.get_layer("dense").bias.numpy()
    assert reestimate_batchnorm(model, [x[:100], x[100:]]) == 1
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), hidden.mean(0), rtol=1e-4, atol=1e-4)
    assert bn.momentum == 0.99
    assert (
        reestimate_batchnorm(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), []) == 0
    )
