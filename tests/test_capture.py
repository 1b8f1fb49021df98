"""Activation capture: what chosen layers see and produce, batch by batch."""

import keras
import numpy as np
import pytest

from tfcompress.core.capture import capture_activations

pytestmark = pytest.mark.jax  # backend-agnostic: also in the JAX subset


def _nested_model():
    inner = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(8, name="in1"), keras.layers.Dense(4, name="in2")],
        name="inner",
    )
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu", name="d0")(inputs)
    out = keras.layers.Add(name="add")([inner(h), keras.layers.Dense(4, name="skip")(h)])
    return keras.Model(inputs, out)


def _numpy_forward(model, x):
    inner = model.get_layer("inner")
    d0, skip = model.get_layer("d0"), model.get_layer("skip")
    in1, in2 = inner.get_layer("in1"), inner.get_layer("in2")

    def dense(layer, v):
        kernel, bias = layer.get_weights()
        return v @ kernel + bias

    h = np.maximum(dense(d0, x), 0)
    return {"d0": h, "inner/in2": dense(in2, dense(in1, h)), "skip": dense(skip, h)}


def test_nested_inputs_and_outputs_match_a_numpy_forward_pass_batch_by_batch():
    model = _nested_model()
    x = np.random.default_rng(0).standard_normal((10, 6)).astype("float32")
    expected = _numpy_forward(model, x)
    batches = []

    def collect(records):
        batches.append({r.layer: r for r in records})

    count = capture_activations(
        model, x, ["d0", "in2", "skip"], collect, inputs=True, outputs=True, batch_size=4
    )
    assert count == 3 and [len(b["d0"].outputs) for b in batches] == [4, 4, 2]
    for name in ("d0", "inner/in2", "skip"):
        got = np.concatenate([b[name].outputs for b in batches])
        np.testing.assert_allclose(got, expected[name], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.concatenate([b["skip"].inputs for b in batches]),
                               expected["d0"], rtol=1e-5, atol=1e-5)  # fmt: skip
    # The wrappers are gone: the model still runs normally and records nothing more.
    assert "call" not in model.get_layer("d0").__dict__
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x)),
        expected["inner/in2"] + expected["skip"], rtol=1e-5, atol=1e-5,
    )  # fmt: skip


def test_sequential_shared_layer_generator_data_and_max_batches():
    shared = keras.layers.Dense(3, name="shared")
    inputs = keras.Input((3,))
    model = keras.Model(inputs, shared(shared(inputs)))
    x = np.ones((6, 3), "float32")
    seen = []
    count = capture_activations(
        model, (x[i : i + 2] for i in range(0, 6, 2)), "shared",
        lambda records: seen.append([(r.call, r.outputs.shape) for r in records]),
        max_batches=2,
    )  # fmt: skip
    assert count == 2 and seen == [[(0, (2, 3)), (1, (2, 3))]] * 2

    seq = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="a")])
    outs = []
    capture_activations(seq, x, keras.layers.Dense, lambda r: outs.append(r[0].outputs))
    np.testing.assert_allclose(np.concatenate(outs), keras.ops.convert_to_numpy(seq(x)))


def test_wrappers_are_removed_when_the_callback_raises_and_bad_input_is_named():
    model = _nested_model()
    x = np.zeros((4, 6), "float32")

    def boom(records):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        capture_activations(model, x, "d0", boom)
    assert "call" not in model.get_layer("d0").__dict__
    with pytest.raises(ValueError, match="layers=None"):
        capture_activations(model, x, None, print)
    with pytest.raises(ValueError, match="nothing to capture"):
        capture_activations(model, x, "d0", print, outputs=False)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        capture_activations(model, x, "d0", print, batch_size=0)
    with pytest.raises(ValueError, match="matches no layer"):
        capture_activations(model, x, "nope", print)
    with pytest.raises(TypeError, match="data must be"):
        capture_activations(model, 3.0, "d0", print)
