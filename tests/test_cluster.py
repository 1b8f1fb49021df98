"""Clustered layers and cluster_model: shared values, centroid gradients, sparsity, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.layer_checks import check_layer
from tfcompress.clustering.cluster_model import cluster_model
from tfcompress.clustering.layers import ClusteredConv1D, ClusteredConv2D, ClusteredDense


@pytest.mark.parametrize(
    "factory,shape",
    [
        (lambda: ClusteredDense(6, clusters=4, name="cd"), (3, 5)),
        pytest.param(
            lambda: ClusteredDense(6, clusters=4, per_channel=True, sparse=True, name="cdp"),
            (3, 5),
            marks=pytest.mark.jax,
        ),
        (lambda: ClusteredConv2D(4, 3, clusters=8, padding="same", name="cc2"), (2, 6, 6, 3)),
        (lambda: ClusteredConv1D(4, 3, clusters=8, sparse=True, name="cc1"), (2, 7, 3)),
    ],
)
def test_shared_layer_checks(factory, shape, tmp_path):
    result = check_layer(factory, shape, tmp_path)
    layer = result.model.layers[-1]
    kernel = np.asarray(layer.kernel)
    groups = kernel.shape[-1] if layer.per_channel else 1
    assert np.unique(kernel.reshape(-1, groups) if groups > 1 else kernel).size <= (
        groups * layer.table_width
    )


def _mlp():
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu", name="d1"),
            keras.layers.Dense(3, name="d2"),
        ]
    )


def test_kernel_is_codebook_lookup_and_centroid_gradient_is_sum():
    model = _mlp()
    w = np.asarray(model.layers[0].kernel)
    w[np.abs(w) < 0.2] = 0
    model.layers[0].kernel.assign(w)
    clustered = cluster_model(model, clusters=4)
    layer = clustered.layers[0]
    assert isinstance(layer, ClusteredDense) and layer.sparse
    codebook = np.asarray(layer.codebook)
    idx = np.asarray(layer.cluster_indices)
    table = np.concatenate([[0.0], codebook]).astype("float32")
    np.testing.assert_array_equal(np.asarray(layer.kernel), table[idx])
    np.testing.assert_array_equal(np.asarray(layer.kernel) == 0, w == 0)
    # The centroid gradient is the sum of its weights' gradients (NumPy reference).
    x = np.random.default_rng(0).standard_normal((5, 8)).astype("float32")
    with tf.GradientTape(persistent=True) as tape:
        kernel = layer.kernel
        tape.watch(kernel)
        loss = tf.reduce_sum(tf.square(tf.matmul(x, kernel)))
    g_codebook = tf.convert_to_tensor(tape.gradient(loss, layer.codebook)).numpy()
    g_kernel = tape.gradient(loss, kernel).numpy()
    expected = np.array([g_kernel[idx == j + 1].sum() for j in range(4)])
    np.testing.assert_allclose(g_codebook, expected, rtol=1e-5, atol=1e-6)


def test_fine_tuning_keeps_zeros_and_sharing(digits):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="c"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, name="out"),
        ]
    )
    kernel = np.asarray(model.layers[0].kernel)
    kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.5)] = 0
    model.layers[0].kernel.assign(kernel)
    clustered = cluster_model(model, clusters=8, per_channel=True)
    clustered.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = np.asarray(clustered.layers[0].codebook).copy()
    clustered.fit(digits.x_train[:256], digits.y_train[:256], epochs=1, verbose=0)
    after = clustered.layers[0]
    assert not np.array_equal(before, np.asarray(after.codebook))
    k = np.asarray(after.kernel)
    np.testing.assert_array_equal(k == 0, kernel == 0)
    for c in range(k.shape[-1]):
        assert np.unique(k[..., c][k[..., c] != 0]).size <= 8
    stats = after.compression_stats()
    assert stats["bits_per_weight"] == 4.0  # 8 clusters + the zero -> 9 -> 4 bits
    assert stats["bytes"] == pytest.approx(k.size * 4 / 8 + 8 * 8 * 4 + 8 * 4)


def test_outputs_close_to_original_and_error_shrinks_with_clusters():
    keras.utils.set_random_seed(1)
    model = _mlp()
    x = np.random.default_rng(1).standard_normal((64, 8)).astype("float32")
    reference = np.asarray(model(x))
    errors = []
    for k in (2, 8, 64):
        clustered = cluster_model(model, clusters=k, preserve_sparsity=False)
        errors.append(float(np.abs(np.asarray(clustered(x)) - reference).max()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.02
    # The original is untouched.
    np.testing.assert_array_equal(np.asarray(model(x)), reference)


def test_summary_reports_bits_per_weight():
    import tfcompress as tfc

    clustered = cluster_model(_mlp(), clusters=16, preserve_sparsity=False)
    summary = tfc.summary(clustered, print_fn=None)
    assert summary["d1"].bits_per_weight == 4.0
    assert summary["d1"].bytes == pytest.approx(8 * 16 * 0.5 + 16 * 4 + 16 * 4)


@pytest.mark.parametrize("clusters", [1, 0, 65537])
def test_bad_clusters_refused(clusters):
    with pytest.raises(ValueError, match="clusters must be in"):
        cluster_model(_mlp(), clusters=clusters)


def test_unclusterable_layer_refused_before_any_change():
    model = keras.Sequential(
        [keras.Input((6, 4)), keras.layers.LSTM(5, name="lstm"), keras.layers.Dense(2, name="d")]
    )
    with pytest.raises(TypeError, match=r"LSTM.*cannot be clustered"):
        cluster_model(model, layers=["lstm"])
    with pytest.raises(ValueError, match="no layer that can be clustered"):
        cluster_model(keras.Sequential([keras.Input((6, 4)), keras.layers.LSTM(5)]))
    with pytest.raises(ValueError, match="init"):
        cluster_model(model, init="nope")
    # Default selection clusters what it can and keeps the LSTM as is.
    clustered = cluster_model(model, clusters=4)
    assert type(clustered.get_layer("lstm")) is keras.layers.LSTM
    assert isinstance(clustered.get_layer("d"), ClusteredDense)
