"""A pruned model (masks kept on the model) goes through cluster_model and tfc.pack/unpack."""

from __future__ import annotations

import keras
import numpy as np

import tfcompress as tfc


def _pruned_model() -> tuple[keras.Model, np.ndarray]:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)])
    model.compile("adam", "mse")
    rng = np.random.default_rng(0)
    x = rng.random((64, 4), dtype=np.float32)
    pruning = tfc.callbacks.GradualPruning(0.5, begin_step=0, end_step=2, frequency=1)
    model.fit(x, rng.random((64, 2), dtype=np.float32), epochs=1, verbose=0, callbacks=[pruning])
    return model, x


def test_pruned_model_packs_and_unpacks_with_equal_outputs(tmp_path):
    model, x = _pruned_model()
    tfc.pack(model, tmp_path / "pruned.tfcp")
    restored = tfc.unpack(tmp_path / "pruned.tfcp")
    np.testing.assert_allclose(
        restored.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )
    assert np.mean(restored.layers[0].kernel.numpy() == 0) == 0.5


def test_clustered_pruned_model_packs_and_unpacks(tmp_path):
    # The README's Deep Compression block: prune, cluster, pack, unpack.
    model, x = _pruned_model()
    clustered = tfc.cluster_model(model, clusters=4)
    tfc.pack(clustered, tmp_path / "clustered.tfcp")
    restored = tfc.unpack(tmp_path / "clustered.tfcp")
    np.testing.assert_array_equal(restored.predict(x, verbose=0), clustered.predict(x, verbose=0))
