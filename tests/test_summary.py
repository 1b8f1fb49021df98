import keras
import numpy as np
import pytest

import tfcompress as tfc


def test_digits_cnn_params_and_macs_match_hand_counts():
    report = tfc.summary(tfc.models.digits_cnn(), print_fn=None)
    assert report["conv1"].params == 3 * 3 * 1 * 32 + 32
    assert report["conv1"].macs == 8 * 8 * 3 * 3 * 1 * 32
    assert report["conv3"].macs == 4 * 4 * 3 * 3 * 64 * 128
    assert report["dense1"].macs == 512 * 128
    assert report.total_params == 159_626
    assert report.total_bytes == 4 * 159_626
    assert report.bits_per_weight == 32
    assert report["pool1"].macs is None and report["pool1"].params == 0


def test_depthwise_embedding_einsum_and_nested_models():
    inner = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="d")], name="inner")
    image = keras.Input((10, 10, 3))
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(image)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = inner(x)
    tokens = keras.Input((7,), dtype="int32")
    e = keras.layers.Embedding(50, 6, name="emb")(tokens)
    e = keras.layers.EinsumDense("abc,cd->abd", output_shape=(7, 5), name="ein")(e)
    model = keras.Model([image, tokens], [x, e])
    report = tfc.summary(model, print_fn=None)
    assert report["dw"].macs == 8 * 8 * 3 * 3 * 3 * 2
    assert report["inner/d"].macs == 6 * 4
    assert report["emb"].macs == 0 and report["emb"].params == 300
    assert report["ein"].macs == 7 * 6 * 5


def test_sparsity_and_printed_table(capsys):
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(10, name="d")])
    kernel = np.ones((10, 10), "float32")
    kernel[:, :7] = 0
    model.layers[0].kernel.assign(kernel)
    report = tfc.summary(model)
    assert report["d"].sparsity == pytest.approx(0.7)
    assert report.sparsity == pytest.approx(0.7)
    out = capsys.readouterr().out
    assert "Dense" in out and "total" in out and "0.7" in out


@keras.saving.register_keras_serializable(package="tests")
class FourBitDense(keras.layers.Dense):
    def compression_stats(self):
        return {"bits_per_weight": 4}


def test_compression_stats_hook_sets_bits_and_bytes():
    model = keras.Sequential([keras.Input((8,)), FourBitDense(16, name="q")])
    row = tfc.summary(model, print_fn=None)["q"]
    assert row.bits_per_weight == 4
    assert row.bytes == (8 * 16 * 4 + 16 * 32) / 8


def test_unbuilt_model_is_refused_clearly():
    with pytest.raises(ValueError, match="not built"):
        tfc.summary(keras.Sequential([keras.layers.Dense(3)]), print_fn=None)
    with pytest.raises(TypeError, match=r"keras\.Model"):
        tfc.summary("model.keras", print_fn=None)
