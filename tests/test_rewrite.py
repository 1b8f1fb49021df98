import keras
import numpy as np
import pytest

from tfcompress.core.rewrite import Replacement, layer_selector, rewrite_model


def _nested_model():
    inner = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(8, name="in1"), keras.layers.Dense(4, name="in2")],
        name="inner",
    )
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, name="d0")(inputs)
    out = keras.layers.Add()([inner(h), keras.layers.Dense(4, name="skip")(h)])
    return keras.Model(inputs, out)


def test_identity_rewrite_copies_every_weight():
    model = _nested_model()
    x = np.random.default_rng(0).standard_normal((5, 6)).astype("float32")
    copy, log = rewrite_model(model, lambda layer: None)
    np.testing.assert_array_equal(copy.predict(x, verbose=0), model.predict(x, verbose=0))
    assert log.replaced == []
    assert copy.get_layer("inner") is not model.get_layer("inner")


def test_replacement_is_initialized_from_the_old_layer_and_original_is_untouched():
    model = _nested_model()
    before = [w.copy() for w in model.get_weights()]
    calls = []

    def replace(layer):
        if layer.name != "in2":
            return None

        def initialize(new, old):
            calls.append((new.name, old.name))
            kernel, bias = old.get_weights()
            new.set_weights([2 * kernel, 2 * bias])

        return Replacement(keras.layers.Dense(4, name="in2"), initialize)

    copy, log = rewrite_model(model, replace)
    assert calls == [("in2", "in2")]
    assert log.replaced == [("inner/in2", "Dense", "Dense")]
    new_kernel = copy.get_layer("inner").get_layer("in2").kernel
    old_kernel = model.get_layer("inner").get_layer("in2").kernel
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(new_kernel), 2 * keras.ops.convert_to_numpy(old_kernel)
    )
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_refusal_in_replace_leaves_nothing_built():
    model = _nested_model()

    def replace(layer):
        if layer.name == "skip":
            raise ValueError("skip cannot be converted")
        return None

    with pytest.raises(ValueError, match="skip cannot"):
        rewrite_model(model, replace)


def test_selectors():
    model = _nested_model()
    by_name = layer_selector(["skip"], model)
    by_type = layer_selector(keras.layers.Add, model)
    by_type_name = layer_selector("Dense", model)
    assert by_name(model.get_layer("skip")) and not by_name(model.get_layer("d0"))
    assert by_type(model.layers[-1]) and by_type_name(model.get_layer("d0"))
    with pytest.raises(ValueError, match=r"layers=\['nope'\] matches no layer"):
        layer_selector(["nope"], model)
    with pytest.raises(TypeError, match=r"layer names or keras\.layers\.Layer classes"):
        layer_selector([3], model)


def test_subclassed_models_get_a_clear_error():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(TypeError, match="subclassed"):
        rewrite_model(net, lambda layer: None)


def test_operation_nodes_and_dict_structure_are_copied():
    # x[:, 0] is a GetItem operation and keras.ops.mean a Mean: nodes with no weights.
    inputs = {"ids": keras.Input((5, 3), name="ids"), "mask": keras.Input((5, 1), name="mask")}
    h = keras.layers.Dense(4, name="enc")(inputs["ids"] * inputs["mask"])
    outputs = {"first": h[:, 0], "mean": [keras.ops.mean(h, axis=1)]}
    model = keras.Model(inputs, outputs)
    copy, _ = rewrite_model(model, lambda layer: None)
    rng = np.random.default_rng(0)
    x = {"ids": rng.normal(size=(2, 5, 3)), "mask": np.ones((2, 5, 1))}
    expected, got = model.predict(x, verbose=0), copy.predict(x, verbose=0)
    assert list(copy.input) == ["ids", "mask"] and set(got) == {"first", "mean"}
    np.testing.assert_array_equal(got["first"], expected["first"])
    np.testing.assert_array_equal(got["mean"][0], expected["mean"][0])
