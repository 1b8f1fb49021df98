"""The protocols layers join tfcompress by, and the modules that ask them."""

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.core.protocols import (
    CompressionStatsLayer,
    PrunableLayer,
    QuantizationAwareLayer,
    is_quantization_aware,
)
from tfcompress.pruning.prunable import find_prunable

pytestmark = pytest.mark.jax  # backend-agnostic: also in the JAX subset


class _Scaled(keras.layers.Layer):
    """A custom layer that joins pruning and the summary by the protocols alone."""

    def build(self, input_shape):
        self.table = self.add_weight(shape=(input_shape[-1], 5), name="table")

    def call(self, x):
        return keras.ops.matmul(x, self.table)

    def prunable_weights(self):
        return [self.table]

    def compression_stats(self):
        return {"params": 7, "bits_per_weight": 2.0}


def test_custom_layer_joins_pruning_and_summary_by_protocol():
    layer = _Scaled(name="scaled")
    model = keras.Sequential([keras.Input((3,)), layer])
    assert isinstance(layer, PrunableLayer) and isinstance(layer, CompressionStatsLayer)
    assert not isinstance(keras.layers.Dense(2), PrunableLayer)
    assert [w.variable for w in find_prunable(model)] == [layer.table]
    row = tfc.summary(model).layers[0]
    assert row.params == 7 and row.bits_per_weight == 2.0


def test_quantization_awareness_needs_the_flag_set():
    class Flagged(keras.layers.Layer):
        is_quantization_aware = False

    assert isinstance(Flagged(), QuantizationAwareLayer) and not is_quantization_aware(Flagged())
    assert not is_quantization_aware(keras.layers.Dense(2))
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    qat = tfc.quantize_model(model)
    assert is_quantization_aware(qat.layers[0])
    assert tfc.tflite_export.is_quantization_aware(qat)
    assert not tfc.tflite_export.is_quantization_aware(model)
    np.testing.assert_equal(qat.layers[0].is_quantization_aware, True)
