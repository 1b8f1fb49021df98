"""shrink_model outputs and sizes; sparse TFLite export; the digits CNN acceptance numbers."""

import gzip

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.callbacks import GradualPruning
from tfcompress.export.sparsity import file_sparsity
from tfcompress.models import accuracy, digits_cnn, train_classifier
from tfcompress.tflite_export import TFLiteModel, export


def _channel_prune(model, x, y, sparsity=0.5, layers=None):
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(
        x,
        y,
        batch_size=32,
        epochs=1,
        verbose=0,
        callbacks=[
            GradualPruning(sparsity, schedule="constant", granularity="channel", layers=layers)
        ],
    )
    return model


def test_shrink_sequential_cnn_halves_channels_with_equal_outputs(digits):
    keras.utils.set_random_seed(0)
    model = _channel_prune(
        digits_cnn(), digits.x_train, digits.y_train, layers=["conv1", "conv2", "conv3", "dense1"]
    )
    small = tfc.shrink_model(model)
    assert [layer.name for layer in small.layers] == [layer.name for layer in model.layers]
    assert small.get_layer("conv2").filters == 32 and small.get_layer("dense1").units == 64
    np.testing.assert_allclose(
        small.predict(digits.x_test, verbose=0), model.predict(digits.x_test, verbose=0), atol=1e-5
    )
    before, after = tfc.summary(model, print_fn=None), tfc.summary(small, print_fn=None)
    assert after.total_params < 0.5 * before.total_params
    assert after.total_macs < 0.5 * before.total_macs


def test_shrink_functional_residual_and_batchnorm(digits):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c1")(inputs)
    y = keras.layers.Conv2D(16, 3, padding="valid", name="c2")(x)
    y = keras.layers.BatchNormalization(name="bn")(y)
    y = keras.layers.Activation("tanh")(y)
    y = keras.layers.Conv2D(16, 3, padding="valid", activation="relu", name="c3")(y)
    skip = keras.layers.Conv2D(16, 1, strides=1, padding="valid", name="proj")(x)
    skip = keras.layers.Cropping2D(2)(skip)
    z = keras.layers.Add()([y, skip])
    z = keras.layers.GlobalAveragePooling2D()(z)
    outputs = keras.layers.Dense(10, name="out")(z)
    model = keras.Model(inputs, outputs)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits.x_train, digits.y_train, epochs=1, verbose=0)
    # make BN statistics non-trivial, then prune
    _channel_prune(model, digits.x_train, digits.y_train, layers=["c1", "c2", "c3", "proj"])
    small = tfc.shrink_model(model)
    np.testing.assert_allclose(
        small.predict(digits.x_test, verbose=0), model.predict(digits.x_test, verbose=0), atol=1e-5
    )
    # c2 -> BN -> tanh -> valid conv: its constants fold into c3's bias, all 8 go
    assert small.get_layer("c2").filters == 8
    assert small.get_layer("bn").gamma.shape == (8,)
    # the add keeps a channel if either branch is alive in it
    c3 = np.all(model.get_layer("c3").kernel.numpy().reshape(-1, 16) == 0, axis=0)
    proj = np.all(model.get_layer("proj").kernel.numpy().reshape(-1, 16) == 0, axis=0)
    assert (
        small.get_layer("c3").filters == small.get_layer("proj").filters == 16 - np.sum(c3 & proj)
    )
    assert small.count_params() < model.count_params()


def test_shrink_refuses_models_it_cannot_read():
    with pytest.raises(ValueError, match="built"):
        tfc.shrink_model(keras.Sequential([keras.layers.Dense(2)]))


def test_sparse_export_float_and_int8_run_with_the_default_delegate(tmp_path, digits):
    keras.utils.set_random_seed(0)
    model = digits_cnn()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(
        digits.x_train[:256],
        digits.y_train[:256],
        epochs=1,
        verbose=0,
        callbacks=[GradualPruning(0.8, schedule="constant")],
    )
    dense = export(
        model, tmp_path / "dense.tflite", sparsity=False, verbose=0, verify_data=digits.x_test
    )
    sparse = export(model, tmp_path / "sparse.tflite", verbose=0, verify_data=digits.x_test)
    assert sparse.sparse_encoding and not dense.sparse_encoding
    assert sparse.bytes < 0.5 * dense.bytes
    assert sparse.op_counts.get("DENSIFY[float32]", 0) >= 1
    assert sparse.max_abs_diff < 1e-4 and sparse.top1_agreement == 1.0
    assert dense.weight_sparsity == pytest.approx(0.8, abs=0.01)
    assert sparse.weight_sparsity == pytest.approx(0.8, abs=0.01)
    int8 = export(
        model,
        tmp_path / "int8.tflite",
        "int8",
        digits.x_train,
        verbose=0,
        verify_data=digits.x_test,
    )
    assert not int8.sparse_encoding and int8.top1_agreement > 0.95
    assert int8.weight_sparsity > 0.75  # a few zeros more from rounding
    with pytest.raises(RuntimeError, match="XNNPACK"):
        export(model, tmp_path / "forced.tflite", "int8", digits.x_train, verbose=0, sparsity=True)
    with pytest.raises(ValueError, match="sparsity"):
        export(model, tmp_path / "bad.tflite", sparsity="yes")


@pytest.mark.slow
def test_digits_cnn_80_percent_pruned_keeps_accuracy_and_int8_is_10x_smaller(
    tmp_path, digits, trained_digits_cnn
):
    baseline = accuracy(trained_digits_cnn, digits.x_test, digits.y_test)
    model = keras.models.clone_model(trained_digits_cnn)
    model.set_weights(trained_digits_cnn.get_weights())
    steps = int(np.ceil(len(digits.x_train) / 32))
    pruning = GradualPruning(
        0.8, begin_step=0, end_step=2 * steps, frequency=steps // 3, scope="global"
    )
    history = train_classifier(model, digits, epochs=4, learning_rate=5e-4, callbacks=[pruning])
    assert history.history["sparsity"][-1] == pytest.approx(0.8, abs=1e-4)
    pruned = accuracy(model, digits.x_test, digits.y_test)
    assert pruned >= baseline - 0.01, (pruned, baseline)
    float_file = export(
        trained_digits_cnn, tmp_path / "float.tflite", verbose=0, verify_data=digits.x_test
    )
    int8_file = export(
        model,
        tmp_path / "pruned_int8.tflite",
        "int8",
        digits.x_train,
        verbose=0,
        verify_data=digits.x_test,
        verify_labels=digits.y_test,
    )
    assert float_file.gzip_bytes / int8_file.gzip_bytes >= 10
    assert int8_file.tflite_accuracy >= baseline - 0.015
    content = (tmp_path / "pruned_int8.tflite").read_bytes()
    assert len(gzip.compress(content, 9)) == int8_file.gzip_bytes
    assert file_sparsity(content).weight_sparsity > 0.79
    TFLiteModel(content).predict(digits.x_test[:4])  # default XNNPACK delegate prepares


def test_pruned_model_fine_tuned_with_qat_keeps_its_zeros_and_exports_int8(tmp_path, digits):
    """Prune, then quantization-aware fine-tuning with KeepSparsity (deep-compression order).

    A fully pruned output channel used to give its per-channel fake-quant a
    degenerate [0, 1e-6] range, so the int8 file had a non-zero weight zero
    point that TFLite's XNNPACK delegate refuses.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    model = keras.Model(inputs, outputs)
    kernel = model.get_layer("conv").kernel
    kernel.assign(keras.ops.convert_to_numpy(kernel) * (np.arange(8) != 3))  # channel 3 pruned
    train_classifier(model, digits, epochs=1, callbacks=[GradualPruning(0.6, schedule="constant")])
    zeros_before = {
        layer.name: keras.ops.convert_to_numpy(layer.kernel) == 0
        for layer in model.layers
        if hasattr(layer, "kernel")
    }
    assert zeros_before["conv"][..., 3].all()

    qat = tfc.quantize_model(model)
    train_classifier(
        qat, digits, epochs=1, learning_rate=1e-4, callbacks=[tfc.callbacks.KeepSparsity()]
    )
    for name, zeros in zeros_before.items():
        kernel = keras.ops.convert_to_numpy(qat.get_layer(name).kernel)
        np.testing.assert_array_equal(kernel == 0, zeros)  # same pattern, nothing regrown

    report = export(qat, tmp_path / "qat.tflite", "int8", verbose=0, verify_data=digits.x_test[:64])
    assert report.top1_agreement >= 0.95
    content = (tmp_path / "qat.tflite").read_bytes()
    assert file_sparsity(content).weight_sparsity == pytest.approx(0.6, abs=0.02)
    TFLiteModel(content).predict(digits.x_test[:4])  # XNNPACK prepares: every zero point is 0
