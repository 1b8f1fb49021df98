"""Quantizer math vs NumPy references: forward values and straight-through gradients."""

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.quantization import ops as q
from tfcompress.quantizers import (
    LSQQuantizer,
    MinMaxQuantizer,
    MovingAverageQuantizer,
    PACTQuantizer,
)

pytestmark = pytest.mark.jax  # backend-agnostic: also in the JAX subset


def np_fake_quant(x, lo, hi, bits, narrow):
    """TensorFlow/TFLite's nudged fake quantization; returns (values, d/dx mask)."""
    qmin, qmax = (1 if narrow else 0), 2**bits - 1
    scale = (hi - lo) / (qmax - qmin)
    zero_from_min = qmin - lo / scale
    zero = np.clip(np.floor(zero_from_min + 0.5), qmin, qmax)
    nudged_min, nudged_max = (qmin - zero) * scale, (qmax - zero) * scale
    clipped = np.clip(x, nudged_min, nudged_max)
    values = np.floor((clipped - nudged_min) / scale + 0.5) * scale + nudged_min
    return values, ((x >= nudged_min) & (x <= nudged_max)).astype(np.float32)


def value_and_grad(fn, *tensors):
    """fn(*tensors), and the gradients of sum(out * w) for fixed weights w, on TF or JAX."""
    out_shape = tuple(keras.ops.convert_to_numpy(fn(*tensors)).shape)
    weights = np.linspace(0.5, 1.5, int(np.prod(out_shape))).reshape(out_shape)
    w = weights.astype("float32")
    if keras.backend.backend() == "jax":
        import jax

        def loss(*args):
            out = fn(*args)
            return keras.ops.sum(out * keras.ops.cast(w, out.dtype)), out

        grads, out = jax.grad(loss, argnums=tuple(range(len(tensors))), has_aux=True)(
            *[keras.ops.convert_to_tensor(t) for t in tensors]
        )
        return np.asarray(out), [np.asarray(g) for g in grads], weights
    import tensorflow as tf

    variables = [tf.Variable(t) for t in tensors]
    with tf.GradientTape() as tape:
        out = fn(*variables)
        loss = tf.reduce_sum(out * tf.constant(w, out.dtype))
    grads = tape.gradient(loss, variables)
    return out.numpy(), [None if g is None else g.numpy() for g in grads], weights


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(0, 1.5, (6, 5)).astype("float32")


@pytest.mark.parametrize("bits,narrow", [(8, False), (8, True), (4, True), (3, False)])
def test_fake_quant_matches_numpy(x, bits, narrow):
    lo, hi = -1.3, 2.1
    out, (grad,), w = value_and_grad(lambda t: q.fake_quant(t, lo, hi, bits, narrow), x)
    ref, mask = np_fake_quant(x, lo, hi, bits, narrow)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    np.testing.assert_allclose(grad, w * mask, atol=1e-6)
    assert len(np.unique(out)) <= 2**bits


def test_minmax_per_channel_symmetric(x):
    quantizer = MinMaxQuantizer(4, axis=-1)
    out = keras.ops.convert_to_numpy(quantizer(x))
    for c in range(x.shape[1]):
        m = np.abs(x[:, c]).max()
        ref, _ = np_fake_quant(x[:, c], -m, m, 4, True)
        np.testing.assert_allclose(out[:, c], ref, atol=1e-5)
        # Symmetric narrow grid: at most 15 levels, zero exactly representable.
        levels = np.round(out[:, c] / (m / 7))
        assert levels.min() >= -7 and levels.max() <= 7


def test_minmax_asymmetric_and_power_of_two(x):
    out = keras.ops.convert_to_numpy(MinMaxQuantizer(8, symmetric=False)(x))
    ref, _ = np_fake_quant(x, min(x.min(), 0), max(x.max(), 0), 8, False)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    pow2 = keras.ops.convert_to_numpy(MinMaxQuantizer(8, power_of_two=True)(x))
    step = 2.0 ** np.ceil(np.log2(np.abs(x).max() / 127))
    np.testing.assert_allclose(pow2, np.clip(np.floor(x / step + 0.5), -127, 127) * step, atol=1e-6)


def test_round_ste_and_scale_gradient():
    v = np.array([-1.5, -0.4, 0.5, 2.49], "float32")
    out, (grad,), w = value_and_grad(q.round_ste, v)
    np.testing.assert_array_equal(out, np.floor(v + 0.5))
    np.testing.assert_allclose(grad, w)
    out, (grad,), w = value_and_grad(lambda t: q.scale_gradient(t, 0.25), v)
    np.testing.assert_array_equal(out, v)
    np.testing.assert_allclose(grad, 0.25 * w)


def test_lsq_forward_and_gradients(x):
    step, qmin, qmax, g = np.float32(0.3), -7, 7, 0.5
    out, (gx, gs), w = value_and_grad(lambda t, s: q.lsq_fake_quant(t, s, qmin, qmax, g), x, step)
    v = x / step
    np.testing.assert_allclose(out, np.clip(np.floor(v + 0.5), qmin, qmax) * step, atol=1e-6)
    inside = (v >= qmin) & (v <= qmax)
    np.testing.assert_allclose(gx, w * inside, atol=1e-6)
    ds = np.where(inside, np.floor(v + 0.5) - v, np.where(v < qmin, qmin, qmax))
    np.testing.assert_allclose(gs, g * np.sum(w * ds), rtol=1e-4)


def test_pact_forward_and_gradients(x):
    alpha, bits = np.float32(1.2), 4
    out, (gx, ga), w = value_and_grad(lambda t, a: q.pact_fake_quant(t, a, bits), x, alpha)
    step = alpha / (2**bits - 1)
    np.testing.assert_allclose(out, np.floor(np.clip(x, 0, alpha) / step + 0.5) * step, atol=1e-6)
    np.testing.assert_allclose(gx, w * ((x > 0) & (x < alpha)), atol=1e-6)
    np.testing.assert_allclose(ga, np.sum(w * (x >= alpha)), rtol=1e-5)


class _Owner(keras.layers.Layer):
    def __init__(self, quantizer, **kwargs):
        super().__init__(**kwargs)
        self.quantizer = quantizer
        self.state = {}

    def build(self, shape):
        self.state = self.quantizer.build(self, shape, "x")

    def call(self, x, training=False):
        return self.quantizer(x, self.state, training=training)


def test_moving_average_range_updates_and_inference_uses_it(x):
    layer = _Owner(MovingAverageQuantizer(8, momentum=0.9))
    layer(x, training=True)
    np.testing.assert_allclose(layer.state["min"].numpy(), min(x.min(), 0), rtol=1e-6)
    second = x * 2
    layer(second, training=True)
    expected_max = 0.9 * x.max() + 0.1 * second.max()
    np.testing.assert_allclose(layer.state["max"].numpy(), expected_max, rtol=1e-5)
    out = keras.ops.convert_to_numpy(layer(second, training=False))
    ref, _ = np_fake_quant(second, layer.state["min"].numpy(), expected_max, 8, False)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert float(layer.state["max"].numpy()) == pytest.approx(expected_max, rel=1e-5)


def test_lsq_initialises_from_first_batch_and_exports_learned_range(x):
    layer = _Owner(LSQQuantizer(4, axis=-1))
    train_out = keras.ops.convert_to_numpy(layer(x, training=True))
    init = 2 * np.abs(x).mean(axis=0) / np.sqrt(7)
    np.testing.assert_allclose(layer.state["step"].numpy(), init, rtol=1e-5)
    infer_out = keras.ops.convert_to_numpy(layer(x, training=False))
    np.testing.assert_allclose(infer_out, train_out, atol=1e-5)
    np.testing.assert_allclose(
        infer_out, np.clip(np.floor(x / init + 0.5), -7, 7) * init, atol=1e-5
    )


def test_pact_quantizer_inference_matches_training(x):
    layer = _Owner(PACTQuantizer(8, initial_alpha=1.0))
    a = keras.ops.convert_to_numpy(layer(x, training=True))
    b = keras.ops.convert_to_numpy(layer(x, training=False))
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert a.max() <= 1.0 + 1e-6 and a.min() >= 0


@pytest.mark.parametrize("name", sorted(tfc.quantizers.PRESETS))
def test_presets_round_trip(name):
    quantizer = tfc.quantizers.get(name)
    config = tfc.quantizers.serialize(quantizer)
    assert config["registered_name"].startswith("tfcompress>")
    assert tfc.quantizers.deserialize(config) == quantizer
    assert tfc.quantizers.get(config) == quantizer


@pytest.mark.parametrize(
    "factory,bits",
    [
        (MinMaxQuantizer, 9),
        (MinMaxQuantizer, 1),
        (MovingAverageQuantizer, 17),
        (LSQQuantizer, 0),
        (PACTQuantizer, 32),
    ],
)
def test_bits_outside_supported_range(factory, bits):
    with pytest.raises(ValueError, match=rf"bits={bits} is not supported by {factory.__name__}"):
        factory(bits)


def test_per_channel_axis_out_of_range():
    with pytest.raises(ValueError, match=r"axis=3 is out of range .* shape \(4, 5\)"):
        tfc.layers.QuantDense(5, kernel_quantizer=MinMaxQuantizer(8, axis=3))(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"axis=-4 is out of range"):
        _Owner(LSQQuantizer(8, axis=-4))(np.zeros((2, 4, 3), "float32"))


def test_unknown_quantizer_name():
    with pytest.raises(
        ValueError, match=r"quantizer='int7' is not a known quantizer.*int8_per_channel"
    ):
        tfc.quantizers.get("int7")
    with pytest.raises(ValueError, match=r"kernel_quantizer='nope'"):
        tfc.layers.QuantConv2D(4, 3, kernel_quantizer="nope")
    with pytest.raises(TypeError, match="kernel_quantizer must be"):
        tfc.layers.QuantDense(4, kernel_quantizer=8)
