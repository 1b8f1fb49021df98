"""Backend boundaries: TF-only parts refuse other backends clearly; gradients work on both.

Runs in the TensorFlow suite (the guards see a patched backend name) and in the
JAX subset (the guards meet the real JAX backend).
"""

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.core.backend import require_tensorflow_backend
from tfcompress.core.gradients import loss_gradients

pytestmark = pytest.mark.jax


def _tiny_model():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="d")])
    model.compile("sgd", "mse")
    return model


def _binary_dense():
    layer = tfc.layers.BinaryDense(4)
    layer.build((None, 8))
    return layer


def _call_export(tmp_path):
    tfc.tflite_export.export(_tiny_model(), tmp_path / "sub" / "m.tflite", verbose=0)


def _call_convert(tmp_path):
    tfc.tflite_export.convert(_tiny_model())


def _call_pack_bits(tmp_path):
    from tfcompress.ops import tf as tops

    tops.pack_bits(np.ones((2, 8), np.float32))


def _call_binary_matmul(tmp_path):
    from tfcompress.ops import tf as tops

    words = np.zeros((2, 1), np.int32)
    tops.binary_matmul(words, words, k=8)


def _call_pack_dense_kernel(tmp_path):
    from tfcompress.ops import tf as tops

    tops.pack_dense_kernel(np.ones((8, 4), np.float32))


def _call_binary_dense_inference(tmp_path):
    from tfcompress.ops import tf as tops

    tops.binary_dense_inference(np.ones((1, 8), np.float32), np.zeros((4, 1), np.int32))


def _call_packed_layer(tmp_path):
    tfc.layers.BinaryDense(4, inference="packed")


def _call_freeze(tmp_path):
    _binary_dense().freeze()


def _call_tf_gradients(tmp_path):
    from tfcompress.core.tf_gradients import loss_gradients as tf_loss_gradients

    model = _tiny_model()
    tf_loss_gradients(model, model.trainable_variables, np.ones((2, 8)), np.ones((2, 4)))


TF_ONLY = {
    "tflite_export.export": (_call_export, "TFLite export"),
    "tflite_export.convert": (_call_convert, "TFLite export"),
    "ops.tf.pack_bits": (_call_pack_bits, "pack_bits"),
    "ops.tf.binary_matmul": (_call_binary_matmul, "binary_matmul"),
    "ops.tf.pack_dense_kernel": (_call_pack_dense_kernel, "pack_dense_kernel"),
    "ops.tf.binary_dense_inference": (_call_binary_dense_inference, "binary_dense_inference"),
    "BinaryDense(inference='packed')": (_call_packed_layer, "Packed binary inference"),
    "BinaryDense.freeze": (_call_freeze, "Packed binary inference (freeze)"),
    "ops.tf.gradients": (_call_tf_gradients, "gradient-based pruning criteria"),
}


@pytest.mark.parametrize("name", list(TF_ONLY))
def test_tensorflow_only_parts_refuse_other_backends(name, non_tensorflow_backend, tmp_path):
    call, feature = TF_ONLY[name]
    with pytest.raises(RuntimeError) as info:
        call(tmp_path)
    message = str(info.value)
    assert feature in message
    assert "needs the TensorFlow backend" in message
    assert repr(non_tensorflow_backend) in message
    assert "KERAS_BACKEND=tensorflow" in message
    # Refused before anything was written.
    assert not (tmp_path / "sub").exists()


def test_require_tensorflow_backend_passes_on_tensorflow():
    if keras.backend.backend() != "tensorflow":
        with pytest.raises(RuntimeError, match="feature X needs the TensorFlow backend"):
            require_tensorflow_backend("feature X")
    else:
        require_tensorflow_backend("feature X")  # no error


def test_loss_gradients_match_the_closed_form():
    """dL/dW of mean((xW + b - y)^2) = 2/(N*U) x^T (xW + b - y), on this backend."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 8)).astype("float32")
    y = rng.standard_normal((6, 4)).astype("float32")
    model = _tiny_model()
    layer = model.get_layer("d")
    w, b = (keras.ops.convert_to_numpy(v) for v in (layer.kernel, layer.bias))
    (grad,) = loss_gradients(model, [layer.kernel], x, y)
    expected = 2.0 / y.size * x.T @ (x @ w + b - y)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)
    (grad_fn,) = loss_gradients(
        model, [layer.kernel], x, y, loss=lambda t, p: keras.ops.mean((p - t) ** 2)
    )
    np.testing.assert_allclose(grad_fn, expected, rtol=1e-4, atol=1e-6)
