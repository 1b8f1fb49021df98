"""LQ-Nets quantizer: nearest levels and QEM against NumPy, gradients, layers, saving, errors."""

import itertools

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.quantizers import LQNetQuantizer

pytestmark = pytest.mark.jax


def _state(quantizer, shape, name="kernel"):
    layer = keras.layers.Layer()
    return quantizer.build(layer, shape, name)


def _codes(bits, mode):
    rows = np.array(list(itertools.product((0.0, 1.0), repeat=bits)))
    return 2 * rows - 1 if mode == "weights" else rows


def _nearest(x, basis, mode):
    """NumPy reference: every value to the nearest combination of its channel's basis."""
    groups = basis.shape[0]
    flat = x.reshape(-1, groups)  # channels last (axis=-1) or one group
    levels = (_codes(basis.shape[-1], mode) @ basis.T).T  # (G, L)
    index = np.argmin(np.abs(flat[:, :, None] - levels[None]), axis=-1)
    return levels[np.arange(groups)[None], index].reshape(x.shape)


@pytest.mark.parametrize(("bits", "mode", "axis"), [(2, "weights", -1), (3, "activations", None)])
def test_inference_maps_every_value_to_its_nearest_level(bits, mode, axis):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 3, 4, 5)).astype("float32")
    quantizer = LQNetQuantizer(bits, mode, axis=axis)
    state = _state(quantizer, x.shape)
    groups = 5 if axis == -1 else 1
    basis = np.abs(rng.normal(size=(groups, bits))).astype("float32") + 0.1
    state["basis"].assign(basis)
    got = keras.ops.convert_to_numpy(quantizer(x, state, training=False))
    np.testing.assert_allclose(got, _nearest(x, basis, mode), rtol=1e-6, atol=1e-6)
    for g in range(groups):
        assert len(np.unique(np.round(got[..., g] if groups > 1 else got, 5))) <= 2**bits


def test_a_training_step_stores_the_least_squares_basis_with_momentum():
    """QEM: v <- m v + (1 - m) (B^T B)^-1 B^T x, B the codes of the nearest levels."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3)).astype("float32")
    quantizer = LQNetQuantizer(2, "weights", axis=-1, momentum=0.25)
    state = _state(quantizer, x.shape)
    basis = np.array([[0.3, 0.9], [0.5, 1.0], [0.2, 0.6]], np.float32)
    state["basis"].assign(basis)
    state["ready"].assign(1.0)
    quantizer(x, state, training=True)
    codes = _codes(2, "weights")
    for g in range(3):
        levels = codes @ basis[g]
        b = codes[np.argmin(np.abs(x[:, g, None] - levels), axis=-1)]
        gram = b.T @ b
        fitted = np.linalg.solve(gram + 1e-4 * (np.trace(gram) / 2 + 1) * np.eye(2), b.T @ x[:, g])
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(state["basis"])[g],
            0.25 * basis[g] + 0.75 * fitted,
            rtol=1e-4,
        )


def test_qem_reaches_the_optimal_four_level_quantizer_of_a_gaussian():
    """Lloyd-Max's 4-level quantizer of N(0, 1) has MSE 0.1175; a uniform 2-bit grid
    over the range (MinMax) is several times worse."""
    x = np.random.default_rng(2).normal(size=(20000, 1)).astype("float32")
    quantizer = LQNetQuantizer(2, "weights", axis=-1, momentum=0.0)
    state = _state(quantizer, x.shape)
    for _ in range(30):
        y = keras.ops.convert_to_numpy(quantizer(x, state, training=True))
    assert np.mean((y - x) ** 2) < 0.1175 * 1.02
    minmax = tfc.quantizers.MinMaxQuantizer(2)
    uniform = keras.ops.convert_to_numpy(minmax(x, {}, training=False))
    assert np.mean((uniform - x) ** 2) > 3 * np.mean((y - x) ** 2)


def test_a_code_bit_no_value_used_keeps_its_basis_element():
    """All inputs at or below 0: the activation codes are all zero; the basis stays."""
    x = -np.abs(np.random.default_rng(3).normal(size=(32, 4))).astype("float32")
    quantizer = LQNetQuantizer(2, "activations", momentum=0.0)
    state = _state(quantizer, x.shape, "input")
    state["basis"].assign(np.array([[0.5, 1.0]], np.float32))
    state["ready"].assign(1.0)
    y = keras.ops.convert_to_numpy(quantizer(x, state, training=True))
    np.testing.assert_array_equal(y, np.zeros_like(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(state["basis"]), [[0.5, 1.0]])


@pytest.mark.parametrize("mode", ["weights", "activations"])
def test_straight_through_gradient(mode):
    x = np.linspace(-3, 3, 61, dtype="float32").reshape(61, 1)
    quantizer = LQNetQuantizer(2, mode)
    state = _state(quantizer, x.shape)
    state["basis"].assign(np.array([[0.5, 1.0]], np.float32))
    state["ready"].assign(1.0)
    levels = _codes(2, mode) @ np.array([0.5, 1.0])
    if keras.backend.backend() == "jax":
        import jax

        grad = jax.grad(lambda v: quantizer(v, state, training=False).sum())(x)
    else:
        import tensorflow as tf

        v = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(v)
            total = tf.reduce_sum(quantizer(v, state, training=False))
        grad = tape.gradient(total, v)
    grad = np.asarray(grad)
    if mode == "weights":
        np.testing.assert_array_equal(grad, np.ones_like(x))
    else:
        inside = (x >= levels.min()) & (x <= levels.max())
        np.testing.assert_array_equal(grad, inside.astype("float32"))


def test_layers_train_save_and_reload_with_equal_outputs(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            tfc.layers.QuantConv2D(
                4,
                3,
                kernel_quantizer="lqnet2",
                input_quantizer="lqnet2_activation",
                activation_quantizer=None,
                name="conv",
            ),
            keras.layers.Flatten(),
            tfc.layers.QuantDense(3, kernel_quantizer="lqnet2", activation_quantizer=None),
        ]
    )
    rng = np.random.default_rng(4)
    x = np.abs(rng.normal(size=(32, 6, 6, 2))).astype("float32")
    before = keras.ops.convert_to_numpy(model.get_layer("conv").quantizer_state["kernel"]["basis"])
    model.compile("adam", "mse")
    model.fit(x, rng.normal(size=(32, 3)).astype("float32"), epochs=2, verbose=0)
    state = model.get_layer("conv").quantizer_state
    assert keras.ops.convert_to_numpy(state["kernel"]["ready"]) == 1.0
    assert not np.allclose(keras.ops.convert_to_numpy(state["kernel"]["basis"]), before)
    path = tmp_path / "lq.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.get_layer("conv").kernel_quantizer == LQNetQuantizer(2, "weights", axis=-1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bits": 5}, "bits"),
        ({"bits": 0}, "bits"),
        ({"mode": "kernel"}, "mode must be one of"),
        ({"momentum": 1.0}, "momentum must be in"),
        ({"axis": 1.5}, "axis must be None or an integer"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LQNetQuantizer(**kwargs)


def test_an_axis_outside_the_tensor_is_refused_at_build():
    with pytest.raises(ValueError, match="axis=3 is out of range"):
        _state(LQNetQuantizer(2, axis=3), (4, 5))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TFLite export is TF-only")
def test_float_tflite_export_folds_kernels_and_agrees(tmp_path):
    """Kernels fold to their levels (no larger a file, no other ops than float kernels give)
    and the input quantizers run in the file; outputs equal Keras'."""
    rng = np.random.default_rng(5)
    x = np.abs(rng.normal(size=(64, 6, 6, 2))).astype("float32")

    def build(kernel, inputs):
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [
                keras.Input((6, 6, 2)),
                tfc.layers.QuantConv2D(
                    8, 3, kernel_quantizer=kernel, input_quantizer=inputs, activation_quantizer=None
                ),
                keras.layers.Flatten(),
                tfc.layers.QuantDense(
                    4, kernel_quantizer=kernel, input_quantizer=inputs, activation_quantizer=None
                ),
            ]
        )

    model = build("lqnet2", "lqnet2_activation")
    model.compile("adam", "mse")
    model.fit(x, rng.normal(size=(64, 4)).astype("float32"), epochs=1, verbose=0)
    report = tfc.tflite_export.export(model, tmp_path / "lq.tflite", verify_data=x)
    assert report.verified and report.top1_agreement == 1.0 and report.max_abs_diff < 1e-4
    plain = tfc.tflite_export.export(build(None, None), tmp_path / "plain.tflite", verify=False)
    kernels = tfc.tflite_export.export(build("lqnet2", None), tmp_path / "k.tflite", verify=False)
    # The kernel quantizers leave nothing in the file but the folded kernels.
    assert kernels.bytes <= plain.bytes and kernels.op_counts == plain.op_counts
