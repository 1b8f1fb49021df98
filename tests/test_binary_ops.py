"""Binary/ternary/DoReFa quantizers: outputs and gradients against NumPy references."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcompress.quantization import binary as Q
from tfcompress.quantization import binary_ops as B
from tfcompress.quantization import registry as R

# The registry's presets for the quantizers of this family.
BINARY_PRESETS = sorted(
    name
    for name, factory in R.PRESETS.items()
    if isinstance(factory(), (Q.BinaryQuantizer, Q.DoReFa))
)

# Values that sit on the clip edges (+-1, +-0.5 for clip 0.5), at 0 and beyond.
EDGES = np.array([-2.0, -1.0, -0.999, -0.5, -0.25, 0.0, 0.25, 0.5, 0.999, 1.0, 1.5], np.float32)


def _value_and_grad(fn, x, upstream, *extra):
    variables = [tf.Variable(x)] + [tf.Variable(e) for e in extra]
    with tf.GradientTape() as tape:
        y = fn(*variables)
        loss = tf.reduce_sum(y * upstream)
    grads = tape.gradient(loss, variables)
    return y.numpy(), [g.numpy() for g in grads]


def np_sign(x):
    return np.where(x >= 0, 1.0, -1.0).astype(np.float32)


@pytest.mark.parametrize("clip", [1.0, 0.5, None])
def test_ste_sign_matches_numpy_at_clip_edges(clip):
    up = np.random.default_rng(0).standard_normal(EDGES.shape).astype(np.float32)
    y, (g,) = _value_and_grad(lambda v: B.ste_sign(v, clip), EDGES, up)
    np.testing.assert_array_equal(y, np_sign(EDGES))
    mask = np.ones_like(EDGES) if clip is None else (np.abs(EDGES) <= clip)
    np.testing.assert_allclose(g, up * mask, rtol=0, atol=0)
    # The edge itself passes the gradient, just beyond it does not.
    if clip == 1.0:
        assert g[EDGES == 1.0][0] == up[EDGES == 1.0][0] and g[EDGES == 1.5][0] == 0


def test_approx_sign_matches_numpy():
    up = np.random.default_rng(1).standard_normal(EDGES.shape).astype(np.float32)
    y, (g,) = _value_and_grad(B.approx_sign, EDGES, up)
    np.testing.assert_array_equal(y, np_sign(EDGES))
    slope = np.where(np.abs(EDGES) <= 1, 2 - 2 * np.abs(EDGES), 0)
    np.testing.assert_allclose(g, up * slope, atol=1e-6)
    assert g[EDGES == 1.0][0] == 0 and g[EDGES == 0.0][0] == pytest.approx(2 * up[EDGES == 0][0])


def test_swish_sign_matches_numpy():
    x = np.concatenate([EDGES, [-30.0, 40.0]]).astype(np.float32)
    up = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    beta = 5.0
    y, (g,) = _value_and_grad(lambda v: B.swish_sign(v, beta), x, up)
    np.testing.assert_array_equal(y, np_sign(x))
    bx = beta * x.astype(np.float64)
    slope = beta * (2 - bx * np.tanh(bx / 2)) / (1 + np.cosh(bx))
    np.testing.assert_allclose(g, up * slope, rtol=1e-5, atol=1e-6)

    # It is the derivative of 2 sigmoid(bx)(1 + bx(1 - sigmoid(bx))) - 1.
    def smooth(t):
        sig = 1 / (1 + np.exp(-beta * t))
        return 2 * sig * (1 + beta * t * (1 - sig)) - 1

    xd = x[:-2].astype(np.float64)
    numeric = (smooth(xd + 1e-6) - smooth(xd - 1e-6)) / 2e-6
    np.testing.assert_allclose(slope[:-2], numeric, atol=1e-5)


def test_magnitude_aware_sign_matches_numpy():
    rng = np.random.default_rng(3)
    w = rng.uniform(-1.5, 1.5, (3, 3, 2, 4)).astype(np.float32)
    w[0, 0, 0, 0] = 1.0  # on the clip edge
    up = rng.standard_normal(w.shape).astype(np.float32)
    y, (g,) = _value_and_grad(B.magnitude_aware_sign, w, up)
    scale = np.abs(w).mean(axis=(0, 1, 2), keepdims=True)
    np.testing.assert_allclose(y, scale * np_sign(w), rtol=1e-6)
    np.testing.assert_allclose(g, up * scale * (np.abs(w) <= 1), rtol=1e-6)
    assert g[0, 0, 0, 0] != 0


def test_ternarize_matches_numpy():
    rng = np.random.default_rng(4)
    w = rng.uniform(-1.2, 1.2, (5, 6)).astype(np.float32)
    w[0, 0] = -1.0
    up = rng.standard_normal(w.shape).astype(np.float32)
    y, (g,) = _value_and_grad(lambda v: B.ternarize(v, threshold=0.7), w, up)
    a = np.abs(w)
    delta = 0.7 * a.mean(axis=0, keepdims=True)
    keep = a > delta
    scale = (a * keep).sum(axis=0, keepdims=True) / keep.sum(axis=0, keepdims=True)
    np.testing.assert_allclose(y, scale * np_sign(w) * keep, rtol=1e-6)
    assert set(np.unique(np.round(y / scale, 6))) <= {-1.0, 0.0, 1.0}
    np.testing.assert_allclose(g, up * scale * (a <= 1), rtol=1e-6)


def test_ttq_matches_numpy_including_scale_gradients():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 3, 6)).astype(np.float32)
    wp = np.array([0.5, 1.0, 2.0, 1.5, 0.7, 0.3], np.float32)
    wn = np.array([1.0, 0.2, 0.4, 1.1, 0.9, 2.5], np.float32)
    up = rng.standard_normal(w.shape).astype(np.float32)
    y, (gx, gp, gn) = _value_and_grad(lambda v, p, n: B.ttq(v, p, n, threshold=0.3), w, up, wp, wn)
    delta = 0.3 * np.abs(w).max(axis=(0, 1), keepdims=True)
    pos, neg = w > delta, w < -delta
    np.testing.assert_array_equal(y, np.where(pos, wp, 0) - np.where(neg, wn, 0))
    np.testing.assert_allclose(gx, up * np.where(pos, wp, np.where(neg, wn, 1.0)), rtol=1e-6)
    np.testing.assert_allclose(gp, (up * pos).sum(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(gn, -(up * neg).sum(axis=(0, 1)), rtol=1e-5)


def test_dorefa_activations_matches_numpy_at_edges():
    x = np.array([-0.5, 0.0, 0.1, 0.2, 0.5, 0.83, 1.0, 1.2], np.float32)
    up = np.random.default_rng(6).standard_normal(x.shape).astype(np.float32)
    y, (g,) = _value_and_grad(lambda v: B.dorefa(v, 2, "activations"), x, up)
    np.testing.assert_allclose(y, np.round(np.clip(x, 0, 1) * 3) / 3, rtol=1e-6)
    np.testing.assert_allclose(g, up * ((x >= 0) & (x <= 1)), rtol=1e-6)
    assert g[1] == pytest.approx(up[1]) and g[6] == pytest.approx(up[6]) and g[7] == 0


def test_dorefa_weights_matches_numpy():
    rng = np.random.default_rng(7)
    w = rng.standard_normal(10).astype(np.float32)
    up = rng.standard_normal(10).astype(np.float32)
    y, (g,) = _value_and_grad(lambda v: B.dorefa(v, 3, "weights"), w, up)
    t = np.tanh(w.astype(np.float64))
    m = np.abs(t).max()
    np.testing.assert_allclose(y, 2 * np.round((t / (2 * m) + 0.5) * 7) / 7 - 1, atol=1e-6)
    # d/dw of tanh(w)/m with the max term (rounding passes gradients through).
    k = np.argmax(np.abs(t))
    grad = up * (1 - t**2) / m
    grad[k] -= np.sign(t[k]) * (1 - t[k] ** 2) * np.sum(up * t) / m**2
    np.testing.assert_allclose(g, grad, rtol=1e-4, atol=1e-5)


def test_forward_values_are_exact_under_tf_function():
    x = tf.constant(np.random.default_rng(8).standard_normal((64, 32)).astype(np.float32))
    y = tf.function(lambda t: B.magnitude_aware_sign(t))(x).numpy()
    scales = np.unique(np.abs(y), axis=0)
    assert scales.shape[0] == 1  # every entry of a channel has exactly its scale


def test_channel_mean_is_exact_for_constant_magnitudes():
    alpha = np.float32(0.1234567)
    w = np_sign(np.random.default_rng(9).standard_normal((3, 3, 64, 8))) * alpha
    y = keras.ops.convert_to_numpy(B.magnitude_aware_sign(w))
    np.testing.assert_array_equal(y, w)


def test_flip_ratio():
    assert B.flip_ratio(np.array([1.0, -1, 1, 1]), np.array([1.0, 1, -1, 1])) == 0.5
    with pytest.raises(ValueError, match="shapes differ"):
        B.flip_ratio(np.ones(3), np.ones(4))


# ---- errors ----


def test_unknown_quantizer_name_raises():
    with pytest.raises(
        ValueError, match=r"quantizer='ste_sing' is not a known quantizer.*ste_sign"
    ):
        R.get("ste_sing")


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.1, 1.5])
def test_ternary_threshold_outside_unit_interval_raises(threshold):
    with pytest.raises(ValueError, match=r"threshold must be a number in \(0, 1\)"):
        Q.SteTern(threshold=threshold)
    with pytest.raises(ValueError, match=r"threshold must be a number in \(0, 1\)"):
        Q.TTQ(threshold=threshold)
    with pytest.raises(ValueError, match=r"threshold"):
        B.ternarize(np.ones(3, np.float32), threshold=threshold)


def test_other_bad_arguments_raise():
    with pytest.raises(ValueError, match="clip_value"):
        Q.SteSign(clip_value=0)
    with pytest.raises(ValueError, match="k_bit"):
        Q.DoReFa(k_bit=0)
    with pytest.raises(ValueError, match="mode"):
        Q.DoReFa(mode="bias")
    with pytest.raises(TypeError, match="quantizer must be"):
        R.get(3)


# ---- quantizer objects ----


def test_binary_presets_are_all_there():
    assert BINARY_PRESETS == [
        "approx_sign",
        "dorefa",
        "irnet",
        "irnet_sign",
        "magnitude_aware_sign",
        "md_tanh",
        "ste_sign",
        "ste_tern",
        "swish_sign",
        "ternary",
        "ttq",
        "twn",
    ]


@pytest.mark.parametrize("name", BINARY_PRESETS)
def test_quantizer_serialization_round_trip(name):
    q = R.get(name)
    restored = R.deserialize(R.serialize(q))
    assert restored == q and restored is not q
    assert R.serialize(q)["registered_name"].startswith("tfcompress>")
    assert R.get(R.serialize(q)) == q


def test_quantizer_objects_call_the_ops():
    x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(Q.SteSign()(x), np_sign(x))
    np.testing.assert_array_equal(R.get("approx_sign")(x), np_sign(x))
    np.testing.assert_array_equal(Q.SwishSign(2.0)(x), np_sign(x))
    np.testing.assert_allclose(Q.MagnitudeAwareSign()(x), B.magnitude_aware_sign(x))
    np.testing.assert_allclose(R.get("twn")(x), B.ternarize(x, 0.7))
    np.testing.assert_allclose(Q.DoReFa(2)(x), B.dorefa(x, 2))
    assert Q.SteTern().bits == 2 and Q.SteSign().bits == 1 and Q.DoReFa(4).bits == 4
