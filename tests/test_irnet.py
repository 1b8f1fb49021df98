"""IR-Net quantizers (Libra-PB + EDE) and IRNetSchedule vs NumPy references."""

import keras
import numpy as np
import pytest
from serialization_checks import check_serialization

import tfcompress as tfc
from tests.layer_checks import check_layer
from tests.test_quantizers import value_and_grad
from tfcompress.binary.layers import BinaryConv2D, BinaryDense
from tfcompress.quantization import irnet
from tfcompress.quantization.irnet import IRNetSchedule, IRNetSign, LibraPBSign

pytestmark = pytest.mark.jax  # backend-agnostic: also in the JAX subset


def np_temperature(progress, t_min=0.1, t_max=10.0):
    t = t_min * 10 ** (progress * np.log10(t_max / t_min))
    return t, max(1 / t, 1.0)


def np_ede_slope(x, progress):
    t, k = np_temperature(progress)
    return k * t * (1 - np.tanh(t * x) ** 2)


def np_sign(x):
    return np.where(x >= 0, 1.0, -1.0).astype(np.float32)


def np_channels(x, channel_axis):
    """``x`` as (entries, channels) and the function that restores its shape."""
    if channel_axis is None:
        return x.reshape(-1, 1), lambda v: v.reshape(x.shape)
    moved = np.moveaxis(x, channel_axis, -1)
    return moved.reshape(-1, moved.shape[-1]), lambda v: np.moveaxis(
        v.reshape(moved.shape), -1, channel_axis
    )


def np_libra_pb(x, channel_axis=-1):
    """Libra-PB forward per channel: (values, standardized z, scale, std)."""
    flat, restore = np_channels(x.astype(np.float64), channel_axis)
    centered = flat - flat.mean(axis=0)
    variance = (centered**2).mean(axis=0)
    std = np.sqrt(np.maximum(variance, 1e-12))
    z = np.where(variance > 1e-12, centered / std, 0.0)
    mean_abs = np.abs(z).mean(axis=0)
    scale = np.where(mean_abs > 0, 2.0 ** np.round(np.log2(np.where(mean_abs > 0, mean_abs, 1))), 1)
    return restore(scale * np_sign(z)), restore(z), scale, restore(np.broadcast_to(std, z.shape))


def np_libra_pb_grad(x, upstream, progress, channel_axis=-1):
    """dL/dx for L = sum(upstream * q(x)): EDE at z, times the scale, back through (x-mu)/sigma."""
    _, z, scale, std = np_libra_pb(x, channel_axis)
    flat_z, restore = np_channels(z, channel_axis)
    flat_up, _ = np_channels(upstream.astype(np.float64), channel_axis)
    flat_std, _ = np_channels(std, channel_axis)
    g = flat_up * scale * np_ede_slope(flat_z, progress)
    dx = (g - g.mean(axis=0) - flat_z * (g * flat_z).mean(axis=0)) / flat_std
    return restore(dx)


@pytest.fixture
def kernel():
    rng = np.random.default_rng(3)
    w = rng.normal(0.2, 0.5, (3, 3, 4, 5)).astype(np.float32)
    w[..., 3] = 0.0  # heavy tail: one large weight -> mean|z| = 0.33, scale 2^-2
    w[0, 0, 0, 3] = 0.9
    w[..., 4] = -0.3  # constant channel: z = 0, every sign +1, scale 1
    return w


@pytest.mark.parametrize("progress", [0.0, 0.25, 0.5, 1.0])
def test_ede_temperature_goes_log_linearly_from_t_min_to_t_max(progress):
    t, k = irnet.ede_temperature(progress)
    t_ref, k_ref = np_temperature(progress)
    assert float(keras.ops.convert_to_numpy(t)) == pytest.approx(t_ref, rel=1e-6)
    assert float(keras.ops.convert_to_numpy(k)) == pytest.approx(k_ref, rel=1e-6)
    assert IRNetSign().temperature(progress) == pytest.approx((t_ref, k_ref), rel=1e-6)


@pytest.mark.parametrize("progress", [0.0, 0.5, 1.0])
def test_ede_sign_forward_and_gradient_match_numpy(progress):
    x = np.array([-60.0, -1.0, -0.2, -0.05, 0.0, 0.05, 0.3, 2.0, 60.0], np.float32)
    out, (grad,), w = value_and_grad(lambda v: irnet.ede_sign(v, progress), x)
    np.testing.assert_array_equal(out, np_sign(x))
    np.testing.assert_allclose(grad, w * np_ede_slope(x, progress), rtol=1e-5, atol=1e-6)
    # The formula at three points: x = 0 gives k t; far out (|t x| >= 6), about 0.
    zero = int(np.flatnonzero(x == 0)[0])
    t, k = np_temperature(progress)
    assert grad[zero] == pytest.approx(w[zero] * k * t, rel=1e-5)
    assert max(abs(grad[0]), abs(grad[-1])) <= 1e-4 * abs(grad[zero])
    if progress == 0.0:  # t = 0.1, k = 10: close to a straight-through 1
        assert grad[1] == pytest.approx(w[1] * (1 - np.tanh(-0.1) ** 2), rel=1e-5)


@pytest.mark.parametrize("channel_axis", [-1, 0, None])
def test_libra_pb_forward_matches_numpy(kernel, channel_axis):
    out = keras.ops.convert_to_numpy(irnet.libra_pb_sign(kernel, 0.3, channel_axis))
    ref, _, scale, _ = np_libra_pb(kernel, channel_axis)
    np.testing.assert_array_equal(out, ref.astype(np.float32))
    # Exactly +-(power of two) per channel.
    assert np.all(np.log2(scale) == np.round(np.log2(scale)))
    if channel_axis == -1:
        np.testing.assert_array_equal(scale, [1.0, 1.0, 1.0, 0.25, 1.0])
        assert np.all(out[..., 4] == 1.0)
        # Balanced: the signs split around each channel's mean (about half +1),
        # where the plain sign of these weights (mean 0.2) is mostly +1.
        assert abs(np.mean(out[..., :3] > 0) - 0.5) < abs(np.mean(kernel[..., :3] > 0) - 0.5)


@pytest.mark.parametrize("progress", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("channel_axis", [-1, None])
def test_libra_pb_gradient_matches_numpy(kernel, progress, channel_axis):
    kernel = kernel[..., :4]  # the constant channel has no gradient through its std floor
    out, (grad,), w = value_and_grad(
        lambda v: irnet.libra_pb_sign(v, progress, channel_axis), kernel
    )
    np.testing.assert_array_equal(out, np_libra_pb(kernel, channel_axis)[0].astype(np.float32))
    ref = np_libra_pb_grad(kernel, w, progress, channel_axis)
    np.testing.assert_allclose(grad, ref, rtol=2e-4, atol=2e-5 * np.abs(ref).max())


def test_presets_names_and_serialization():
    assert tfc.quantizers.get("irnet") == LibraPBSign()
    assert tfc.quantizers.get("irnet_sign") == IRNetSign()
    assert tfc.quantizers.LibraPBSign is LibraPBSign and tfc.quantizers.IRNetSign is IRNetSign
    for obj in (
        LibraPBSign(channel_axis=None, t_min=0.2, t_max=5.0),
        IRNetSign(t_min=1.0, t_max=1.0),
        IRNetSchedule(total_steps=120),
    ):
        for rebuilt in check_serialization(obj):
            assert rebuilt.get_config() == obj.get_config()
        if not isinstance(obj, IRNetSchedule):
            assert tfc.quantizers.deserialize(tfc.quantizers.serialize(obj)) == obj
    assert LibraPBSign().bits == 1 and LibraPBSign().pack_kind == "binary"
    assert LibraPBSign.scaled and not IRNetSign.scaled


@pytest.mark.parametrize(
    "factory,input_shape",
    [
        (lambda: BinaryDense(6, kernel_quantizer="irnet", input_quantizer="irnet_sign"), (4, 5)),
        (
            lambda: BinaryConv2D(
                4, 3, padding="same", kernel_quantizer="irnet", input_quantizer="irnet_sign"
            ),
            (2, 6, 6, 3),
        ),
    ],
    ids=["dense", "conv2d"],
)
def test_binary_layers_shared_checks(factory, input_shape, tmp_path):
    result = check_layer(factory, input_shape, tmp_path)
    layer = result.model.layers[-1]
    assert sorted(layer.quantizer_state) == ["input", "kernel"]
    assert all(list(s) == ["progress"] for s in layer.quantizer_state.values())
    values, scales = layer.binary_kernel()
    np.testing.assert_array_equal(values * scales, layer.quantized_kernel())
    np.testing.assert_array_equal(
        layer.quantized_kernel(), np_libra_pb(keras.ops.convert_to_numpy(layer.kernel))[0]
    )


def test_binary_layer_mixed_precision(tmp_path):
    # Libra-PB's backward divides by each channel's std (~0.3 here), so at the
    # LossScaleOptimizer's initial scale (2^15) the float16 kernel gradient
    # overflows and the first step is skipped, as loss scaling intends; the
    # scale then halves and training proceeds.
    x = np.random.default_rng(0).standard_normal((4, 16)).astype("float32")
    result = check_layer(
        lambda: BinaryDense(8, kernel_quantizer="irnet", input_quantizer="irnet_sign"),
        x.shape,
        tmp_path,
        input_data=x,
        dtype_policy="mixed_float16",
        atol=1e-3,
        expect_trainable=False,
    )
    model = result.model
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    layer = model.layers[-1]
    assert all(s["progress"].dtype == "float32" for s in layer.quantizer_state.values())
    before = keras.ops.convert_to_numpy(layer.kernel).copy()
    target = np.zeros((4, 8), np.float32)
    for _ in range(4):
        assert np.isfinite(model.train_on_batch(x, target))
    assert not np.array_equal(before, keras.ops.convert_to_numpy(layer.kernel))


class _Recorder(keras.callbacks.Callback):
    def __init__(self, variable):
        super().__init__()
        self.variable = variable
        self.seen = []

    def on_train_batch_begin(self, batch, logs=None):
        self.model  # noqa: B018 - syncs the JAX trainer's state before reading
        self.seen.append(float(keras.ops.convert_to_numpy(self.variable)))


def _sum_loss(y_true, y_pred):
    return keras.ops.sum(y_pred)


def test_schedule_moves_t_from_t_min_to_t_max_inside_the_train_step():
    # q = IRNetSign on the kernel, inputs of ones and loss sum(y): dL/dW = slope(W),
    # so SGD(1) steps W <- W - k t (1 - tanh^2(t W)) at the progress of that step.
    layer = BinaryDense(
        3,
        use_bias=False,
        kernel_quantizer="irnet_sign",
        input_quantizer=None,
        latent_clip=None,
        kernel_initializer=keras.initializers.RandomUniform(-0.5, 0.5, seed=1),
    )
    model = keras.Sequential([keras.Input((2,)), layer])
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss=_sum_loss)
    progress = layer.quantizer_state["kernel"]["progress"]
    w = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
    schedule, recorder = IRNetSchedule(total_steps=3), _Recorder(progress)
    x, y = np.ones((4, 2), np.float32), np.zeros((4, 3), np.float32)
    model.fit(x, y, batch_size=1, epochs=1, verbose=0, callbacks=[schedule, recorder])
    np.testing.assert_allclose(recorder.seen, [0.0, 0.5, 1.0, 1.0])
    temperatures = [IRNetSign().temperature(p)[0] for p in recorder.seen]
    np.testing.assert_allclose(temperatures, [0.1, 1.0, 10.0, 10.0], rtol=1e-5)
    for p in recorder.seen:
        w = w - np_ede_slope(w, p)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.kernel), w, rtol=1e-4, atol=1e-5)
    # Driven by the optimizer's step: a second fit stays at t_max.
    model.fit(x[:1], y[:1], verbose=0, callbacks=[schedule])
    assert schedule.progress == 1.0


def test_schedule_defaults_to_the_fit_length_and_checks_the_model():
    model = keras.Sequential(
        [keras.Input((2,)), BinaryDense(2, kernel_quantizer="irnet", input_quantizer=None)]
    )
    model.compile(optimizer="sgd", loss="mse")
    schedule = IRNetSchedule()
    x, y = np.ones((6, 2), np.float32), np.zeros((6, 2), np.float32)
    model.fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[schedule])
    assert schedule._total == 6 and schedule.progress == pytest.approx(5 / 5)
    plain = keras.Sequential([keras.Input((2,)), BinaryDense(2, kernel_quantizer="ste_sign")])
    plain.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="has no IR-Net quantizer"):
        plain.fit(x, y, verbose=0, callbacks=[IRNetSchedule(10)])


@pytest.mark.parametrize(
    "factory,message",
    [
        (lambda: IRNetSign(t_min=0.0), r"t_min must be a finite number > 0, got t_min=0.0"),
        (lambda: LibraPBSign(t_min=2.0, t_max=1.0), r"t_max must be >= t_min"),
        (lambda: LibraPBSign(channel_axis="last"), r"channel_axis must be None or an integer"),
        (lambda: IRNetSchedule(total_steps=0), r"total_steps must be None or an integer >= 1"),
    ],
)
def test_bad_arguments_name_the_argument(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_stateful_quantizer_needs_its_layer_state():
    with pytest.raises(ValueError, match="keeps state on its layer"):
        LibraPBSign()(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"axis=2 is out of range"):
        BinaryDense(3, kernel_quantizer=LibraPBSign(channel_axis=2))(np.ones((1, 4), np.float32))


def test_binarize_model_and_packed_inference_take_irnet():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, name="first")(inputs)
    h = keras.layers.Conv2D(8, 3, name="middle")(h)
    h = keras.layers.Flatten()(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="last")(h))
    binary = tfc.binarize_model(model, kernel_quantizer="irnet", input_quantizer="irnet_sign")
    layer = binary.get_layer("middle")
    assert type(layer.kernel_quantizer).__name__ == "LibraPBSign"
    # The latent kernel is the (clipped) float kernel; the progress state starts at 0.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer.kernel),
        np.clip(keras.ops.convert_to_numpy(model.get_layer("middle").kernel), -1, 1),
    )
    progress = [v for v in layer.weights if v.name.endswith("_progress")]
    assert progress and all(float(keras.ops.convert_to_numpy(v)) == 0.0 for v in progress)
    from tfcompress.binary.packed import _SIGN_QUANTIZERS

    assert any(isinstance(layer.input_quantizer, q) for q in _SIGN_QUANTIZERS)


def test_summary_counts_the_per_channel_scales_and_the_progress_state():
    layer = BinaryDense(16, kernel_quantizer="irnet", input_quantizer="irnet_sign")
    layer.build((None, 40))
    stats = layer.compression_stats()
    progress = [v for v in layer.weights if v.name.endswith("_progress")]
    assert len(progress) == 2
    # 1 bit per kernel weight + a float32 scale per output channel + bias + the progress scalars
    assert stats["bits_per_weight"] == 1.0
    assert stats["bytes"] == 40 * 16 / 8 + 4 * 16 + 4 * 16 + 4 * len(progress)
