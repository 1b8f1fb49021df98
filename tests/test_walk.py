"""One walker and one selector: every technique reads ``layers=`` the same way."""

import keras
import pytest

import tfcompress as tfc
from tfcompress.core.rewrite import iter_leaf_layers
from tfcompress.core.walk import layer_selector, walk_layers
from tfcompress.pruning.prunable import find_prunable

pytestmark = pytest.mark.jax  # backend-agnostic: also in the JAX subset


def _nested_model():
    inner = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(8, name="in1"), keras.layers.Dense(4, name="in2")],
        name="inner",
    )
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, name="d0")(inputs)
    h = keras.layers.Activation("relu", name="act")(h)
    out = keras.layers.Add(name="add")([inner(h), keras.layers.Dense(4, name="skip")(h)])
    return keras.Model(inputs, out, name="outer")


SELECTIONS = [
    "Dense",
    ["in1", "skip"],
    ["Dense", "in2"],
    keras.layers.Dense,
    lambda layer: layer.name in ("in2", "skip"),
]


@pytest.mark.parametrize(
    "selection", SELECTIONS, ids=["class-name", "names", "mixed", "class", "fn"]
)
def test_pruning_and_quantization_select_the_same_layers(selection):
    model = _nested_model()
    pruned = [weight.layer.name for weight in find_prunable(model, selection)]
    _, log = tfc.quantize_model(
        model, {"quantize_activation_layers": False}, layers=selection, return_log=True
    )
    quantized = [name.split("/")[-1] for name, _, _ in log.replaced]
    pick = layer_selector(selection, model)
    rewritten = [layer.name for _, layer in iter_leaf_layers(model) if pick(layer)]
    assert pruned == quantized == rewritten
    expected = {
        "class-name": ["d0", "in1", "in2", "skip"],
        "names": ["in1", "skip"],
    }
    if isinstance(selection, str):
        assert pruned == expected["class-name"]
    elif selection == ["in1", "skip"]:
        assert pruned == expected["names"]


def test_a_misspelt_name_is_an_error_everywhere():
    model = _nested_model()
    selection = ["d0", "nope"]
    with pytest.raises(ValueError, match=r"no layer named \(or of class\) \['nope'\]"):
        find_prunable(model, selection)
    with pytest.raises(ValueError, match=r"no layer named \(or of class\) \['nope'\]"):
        tfc.quantize_model(model, layers=selection)
    with pytest.raises(TypeError, match=r"got 3"):
        find_prunable(model, ["d0", 3])
    with pytest.raises(TypeError, match=r"got 3"):
        tfc.quantize_model(model, layers=["d0", 3])


def test_walk_names_nested_layers_and_yields_shared_layers_once():
    model = _nested_model()
    names = [name for name, _ in walk_layers(model)]
    assert names == ["input_layer", "d0", "act", "inner/in1", "inner/in2", "skip", "add"] or (
        names[1:] == ["d0", "act", "inner/in1", "inner/in2", "skip", "add"]
    )
    with_models = [name for name, _ in walk_layers(model, models=True)]
    assert with_models.index("inner") == with_models.index("inner/in1") - 1

    shared = keras.layers.Dense(3, name="shared")
    inputs = keras.Input((3,))
    twice = keras.Model(inputs, shared(shared(inputs)))
    assert [name for name, _ in walk_layers(twice)].count("shared") == 1


def test_sublayers_reach_inside_wrappers_for_pruning_only():
    inputs = keras.Input((5, 3))
    h = keras.layers.Bidirectional(keras.layers.LSTM(4, name="lstm"), name="bi")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(h))
    shallow = {type(layer).__name__ for _, layer in walk_layers(model)}
    deep = {type(layer).__name__ for _, layer in walk_layers(model, sublayers=True)}
    assert "LSTMCell" not in shallow and {"LSTM", "LSTMCell"} <= deep
    cells = find_prunable(model, "LSTMCell")
    assert len(cells) == 2  # forward and backward kernels
    with pytest.raises(ValueError, match="matches no layer"):
        layer_selector("LSTMCell", model)
