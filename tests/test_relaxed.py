"""Mirror-descent relaxation (md_tanh): forward, pseudo-gradient, schedule, layers, errors."""

import math

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.binary.layers import BinaryDense
from tfcompress.quantizers import MirrorTanhSign

pytestmark = pytest.mark.jax


def _state(quantizer, progress):
    state = quantizer.build(keras.layers.Layer(), (4,), "kernel")
    state["progress"].assign(progress)
    return state


def _value_and_grad(quantizer, x, state, training):
    if keras.backend.backend() == "jax":
        import jax

        def total(v):
            return quantizer(v, state, training=training).sum()

        return (
            np.asarray(quantizer(x, state, training=training)),
            np.asarray(jax.grad(total)(x)),
        )
    import tensorflow as tf

    v = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(v)
        y = quantizer(v, state, training=training)
        total = tf.reduce_sum(y)
    return y.numpy(), tape.gradient(total, v).numpy()


@pytest.mark.parametrize("progress", [0.0, 0.5, 1.0])
def test_training_forward_is_tanh_beta_x_and_the_gradient_passes_straight(progress):
    x = np.linspace(-0.5, 0.5, 11, dtype="float32")
    quantizer = MirrorTanhSign(beta_min=2.0, beta_max=50.0)
    beta = 2.0 * (50.0 / 2.0) ** progress  # log-linear
    assert quantizer.beta(progress) == pytest.approx(beta, rel=1e-5)
    value, grad = _value_and_grad(quantizer, x, _state(quantizer, progress), training=True)
    np.testing.assert_allclose(value, np.tanh(beta * x), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(grad, np.ones_like(x))  # mirror descent: dL/dw as is


def test_inference_is_the_sign_whatever_the_progress():
    x = np.array([-2.0, -1e-3, 0.0, 1e-3, 0.7], "float32")
    quantizer = MirrorTanhSign()
    for progress in (0.0, 1.0):
        got = keras.ops.convert_to_numpy(quantizer(x, _state(quantizer, progress), training=False))
        np.testing.assert_array_equal(got, [-1, -1, 1, 1, 1])
    assert quantizer.pack_kind == "binary" and quantizer.bits == 1


def test_the_schedule_drives_beta_and_the_layer_round_trips(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((3,)), BinaryDense(2, kernel_quantizer="md_tanh", input_quantizer=None)]
    )
    model.compile(optimizer="sgd", loss="mse")
    schedule = tfc.callbacks.QuantizerSchedule()
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")
    model.fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[schedule])
    state = model.layers[0].quantizer_state["kernel"]
    # The last of the 8 steps ran at progress 1 (beta_max).
    assert schedule._total == 8 and keras.ops.convert_to_numpy(state["progress"]) == 1.0
    path = tmp_path / "md.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.layers[0].kernel_quantizer == MirrorTanhSign()
    assert keras.ops.convert_to_numpy(loaded.layers[0].quantizer_state["kernel"]["progress"]) == 1


def test_irnet_schedule_is_the_same_callback():
    assert issubclass(tfc.callbacks.IRNetSchedule, tfc.callbacks.QuantizerSchedule)
    plain = keras.Sequential([keras.Input((2,)), BinaryDense(2, kernel_quantizer="ste_sign")])
    plain.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="mirror-descent quantizer"):
        plain.fit(
            np.ones((4, 2)),
            np.zeros((4, 2)),
            verbose=0,
            callbacks=[tfc.callbacks.QuantizerSchedule(3)],
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beta_min": 0.0}, r"beta_min must be a finite number > 0, got beta_min=0.0"),
        ({"beta_max": math.inf}, r"beta_max must be a finite number > 0"),
        ({"beta_min": "1"}, r"beta_min must be a finite number > 0"),
        ({"beta_min": 10.0, "beta_max": 5.0}, r"beta_max must be >= beta_min"),
    ],
)
def test_bad_betas_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MirrorTanhSign(**kwargs)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TFLite export is TF-only")
def test_a_trained_layer_exports_as_one_bit_weights(tmp_path):
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            BinaryDense(32, kernel_quantizer="md_tanh", input_quantizer="ste_sign"),
            keras.layers.Dense(4),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 64)).astype("float32")
    model.fit(
        x,
        rng.normal(size=(64, 4)),
        epochs=2,
        verbose=0,
        callbacks=[tfc.callbacks.QuantizerSchedule()],
    )
    report = tfc.tflite_export.export(
        model, tmp_path / "md.tflite", quantization="binary", verify_data=x
    )
    assert report.binary_layers == 1 and report.bits_per_binary_weight <= 1.2
    assert report.top1_agreement == 1.0 and report.max_abs_diff < 1e-4


def _staircase(x, bits, beta=None):
    step = 2.0 / (2**bits - 1)
    thresholds = -1.0 + step * (np.arange(2**bits - 1) + 0.5)
    if beta is None:
        return -1.0 + step * (x[:, None] >= thresholds).sum(-1)
    return -1.0 + (0.5 * step * (1.0 + np.tanh(beta * (x[:, None] - thresholds)))).sum(-1)


@pytest.mark.parametrize("bits", [2, 3])
@pytest.mark.parametrize("progress", [0.0, 0.5, 1.0])
def test_k_bit_relaxation_follows_the_tanh_staircase(bits, progress):
    x = np.linspace(-1.5, 1.5, 31, dtype="float32")
    quantizer = tfc.quantizers.MirrorTanhQuantizer(bits, beta_min=2.0, beta_max=200.0)
    state = _state(quantizer, progress)
    beta = 2.0 * 100.0**progress
    value, grad = _value_and_grad(quantizer, x, state, training=True)
    np.testing.assert_allclose(value, _staircase(x, bits, beta), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(grad, np.ones_like(x))
    hard = keras.ops.convert_to_numpy(quantizer(x, state, training=False))
    np.testing.assert_allclose(hard, _staircase(x, bits), atol=1e-6)
    assert len(np.unique(np.round(hard, 5))) == 2**bits


def test_one_bit_staircase_is_tanh_and_bits_are_checked():
    from tfcompress.quantization.relaxed import mirror_staircase

    x = np.linspace(-1, 1, 9, dtype="float32")
    got = keras.ops.convert_to_numpy(mirror_staircase(keras.ops.convert_to_tensor(x), 1, 3.0))
    np.testing.assert_allclose(got, np.tanh(3.0 * x), rtol=1e-5, atol=1e-6)
    for bits in (1, 9):
        with pytest.raises(ValueError, match="bits"):
            tfc.quantizers.MirrorTanhQuantizer(bits)


def test_k_bit_layer_trains_under_the_schedule_and_round_trips(tmp_path):
    keras.utils.set_random_seed(3)
    quantizer = tfc.quantizers.MirrorTanhQuantizer(2)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            tfc.layers.QuantDense(3, kernel_quantizer=quantizer, activation_quantizer=None),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(4).normal(size=(16, 5)).astype("float32")
    model.fit(
        x, np.zeros((16, 3)), epochs=2, verbose=0, callbacks=[tfc.callbacks.QuantizerSchedule()]
    )
    assert keras.ops.convert_to_numpy(model.layers[0].quantizer_state["kernel"]["progress"]) == 1
    path = tmp_path / "md2.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.layers[0].kernel_quantizer == quantizer
