"""prune_at_init's contract: a pure mask step, then weights changed in place plus a callback."""

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.pruning.snip import snip_masks


def _model_and_data():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(12, name="d1"), keras.layers.Dense(3, name="d2")]
    )
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    return model, (rng.standard_normal((32, 6)).astype("float32"), rng.integers(0, 3, 32))


def test_snip_masks_change_nothing_and_prune_at_init_applies_exactly_them():
    model, data = _model_and_data()
    before = [w.copy() for w in model.get_weights()]
    pairs = snip_masks(model, data, 0.75)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    masks = {target.layer.name: mask for target, mask in pairs}
    total = sum(m.size for m in masks.values())
    assert sum(int((m == 0).sum()) for m in masks.values()) == round(0.75 * total)

    d1 = model.get_layer("d1")
    keep = tfc.prune_at_init(model, data, 0.75)
    assert isinstance(keep, tfc.callbacks.KeepSparsity)
    assert model.get_layer("d1") is d1  # the same model object, changed in place
    for name in ("d1", "d2"):
        kernel = keras.ops.convert_to_numpy(model.get_layer(name).kernel)
        np.testing.assert_array_equal(kernel, before[0 if name == "d1" else 2] * masks[name])


def test_a_refused_call_leaves_the_weights_as_they_were():
    model, data = _model_and_data()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match="scope"):
        tfc.prune_at_init(model, data, 0.5, scope="neuron")
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
