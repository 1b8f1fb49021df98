"""One quantizer system: one base class, one registry, one way to keep state, no import cycle."""

import ast
import inspect
from pathlib import Path

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.binary.layers import BinaryDense
from tfcompress.quantization import binary as binary_module

QUANTIZER_CLASSES = sorted(
    (
        obj
        for obj in vars(tfc.quantizers).values()
        if inspect.isclass(obj)
        and obj.__module__.startswith("tfcompress.")
        and hasattr(obj, "get_config")
        and obj.__name__ not in {"Quantizer", "BinaryQuantizer"}
    ),
    key=lambda cls: cls.__name__,
)
# Backend-agnostic: the JAX subset runs it too.
pytestmark = pytest.mark.jax

# One stateless and one stateful quantizer of each family.
MIXED = ["int8_per_channel", "int4_lsq", "ste_sign", "magnitude_aware_sign", "ttq", "dorefa"]


def test_every_quantizer_class_derives_from_the_one_base():
    names = {cls.__name__ for cls in QUANTIZER_CLASSES}
    assert names == {
        "ApproxSign",
        "DoReFa",
        "IRNetSign",
        "LQNetQuantizer",
        "LSQQuantizer",
        "LibraPBSign",
        "MagnitudeAwareSign",
        "MirrorTanhQuantizer",
        "MirrorTanhSign",
        "MinMaxQuantizer",
        "MovingAverageQuantizer",
        "PACTQuantizer",
        "SteSign",
        "SteTern",
        "SwishSign",
        "TTQ",
    }
    for cls in QUANTIZER_CLASSES:
        assert issubclass(cls, tfc.quantizers.Quantizer), cls
    assert issubclass(tfc.quantizers.BinaryQuantizer, tfc.quantizers.Quantizer)


@pytest.mark.parametrize("cls", QUANTIZER_CLASSES, ids=lambda cls: cls.__name__)
def test_one_registry_resolves_every_quantizer(cls):
    quantizer = cls()
    config = tfc.quantizers.serialize(quantizer)
    assert tfc.quantizers.get(config) == quantizer
    assert tfc.quantizers.get(cls.__name__) == quantizer
    assert tfc.quantizers.deserialize(config) is not quantizer
    # The binary module keeps the classes only: no second get/serialize set.
    for name in ("get", "names", "serialize", "deserialize"):
        assert not hasattr(binary_module, name)


def _state_values(layer):
    return {
        f"{role}/{key}": keras.ops.convert_to_numpy(variable)
        for role, state in layer.quantizer_state.items()
        for key, variable in state.items()
    }


@pytest.mark.parametrize("name", MIXED)
@pytest.mark.parametrize("family", ["quant", "binary"])
def test_any_quantizer_keeps_its_state_on_either_layer_family(name, family, tmp_path):
    if family == "quant":
        layer = tfc.layers.QuantDense(3, kernel_quantizer=name, activation_quantizer=None)
    else:
        layer = BinaryDense(3, kernel_quantizer=name, input_quantizer=None)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layer(inputs))
    layer = model.layers[-1]
    state = layer.quantizer_state["kernel"]
    quantizer = tfc.quantizers.get(name)
    assert sorted(state) == {
        "int4_lsq": ["ready", "step"],
        "ttq": ["negative_scale", "positive_scale"],
    }.get(name, [])
    # The state is the layer's own variables, made by the quantizer's build.
    assert all(any(v is w for w in layer.weights) for v in state.values())
    for offset, variable in enumerate(state.values()):
        variable.assign(np.full(variable.shape, 0.25 + offset, "float32"))
    x = np.random.default_rng(0).uniform(-1, 1, (5, 4)).astype("float32")
    expected = np.asarray(model(x, training=False))
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    reference = quantizer(kernel, state, training=False)
    np.testing.assert_allclose(
        expected, x @ keras.ops.convert_to_numpy(reference) + layer.bias.numpy(), atol=1e-5
    )
    # Saved and restored the same way for every quantizer: with the layer's variables.
    path = tmp_path / f"{family}_{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), expected)
    restored = _state_values(loaded.layers[-1])
    for key, value in _state_values(layer).items():
        np.testing.assert_array_equal(restored[key], value)


def test_stateful_quantizer_without_its_state_names_the_fix():
    with pytest.raises(ValueError, match=r"TTQ\(.*keeps state on its layer"):
        tfc.quantizers.TTQ()(np.ones((2, 3), "float32"))


def _imported_modules(path: Path, package: str) -> set[str]:
    """Every ``tfcompress.*`` module ``path`` imports, at any depth (lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            module = node.module
            if node.level:
                module = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                module = f"{module}.{node.module}"
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("tfcompress.")}


def test_no_import_cycle_in_the_quantization_package():
    root = Path(tfc.__file__).resolve().parent / "quantization"
    package = "tfcompress.quantization"
    modules = {f"{package}.{path.stem}": path for path in root.glob("*.py")}
    graph = {
        name: sorted(m for m in _imported_modules(path, package) if m in modules and m != name)
        for name, path in modules.items()
    }
    state: dict[str, str] = {}

    def visit(name, trail):
        state[name] = "open"
        for target in graph[name]:
            if state.get(target) == "open":
                pytest.fail(f"import cycle: {' -> '.join([*trail, name, target])}")
            if target not in state:
                visit(target, [*trail, name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert graph[f"{package}.registry"]  # the scan sees imports at all
