"""Binary quantizers round-trip through the one registry (tfc.quantizers.serialize/get)."""

import numpy as np
import pytest

import tfcompress as tfc
from tfcompress import quantizers as Q

QUANTIZERS = [
    Q.SteSign(clip_value=0.5),
    Q.ApproxSign(),
    Q.SwishSign(beta=7.0),
    Q.MagnitudeAwareSign(clip_value=None, channel_axis=None),
    Q.SteTern(threshold=0.6, channel_axis=0),
    Q.TTQ(threshold=0.1, initial_scale=2.0),
    Q.DoReFa(k_bit=3, mode="weights"),
]


@pytest.mark.parametrize("quantizer", QUANTIZERS, ids=lambda q: type(q).__name__)
def test_registry_round_trips_binary_quantizers(quantizer):
    config = tfc.quantizers.serialize(quantizer)
    restored = tfc.quantizers.deserialize(config)
    assert type(restored) is type(quantizer)
    assert restored.get_config() == quantizer.get_config()
    assert tfc.quantizers.get(config) == quantizer
    assert tfc.quantizers.get(quantizer) is quantizer
    assert tfc.quantizers.get(type(quantizer).__name__) == type(quantizer)()
    # The face and the registry module are the same functions.
    assert Q.deserialize(config) == quantizer
    assert tfc.quantizers.deserialize(Q.serialize(quantizer)) == quantizer


def test_restored_quantizer_computes_the_same():
    x = np.linspace(-1.5, 1.5, 24, dtype="float32").reshape(4, 6)
    for quantizer in QUANTIZERS[:5]:
        restored = tfc.quantizers.deserialize(tfc.quantizers.serialize(quantizer))
        np.testing.assert_array_equal(np.asarray(restored(x)), np.asarray(quantizer(x)))


def test_registry_still_rejects_other_objects():
    import keras

    config = keras.saving.serialize_keras_object(keras.layers.Dense(2))
    with pytest.raises(ValueError, match="does not describe a tfcompress quantizer"):
        tfc.quantizers.deserialize(config)
