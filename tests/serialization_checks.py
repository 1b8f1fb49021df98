"""The one serialization check every serializable tfcompress object runs.

Modelled on Keras' own ``run_class_serialization_test``. ``check_serialization(obj)``
asserts, for any object with ``get_config`` (quantizer, schedule, criterion,
callback, constraint, optimizer, layer):
  1. ``get_config()`` is JSON-able;
  2. ``type(obj).from_config(config)`` rebuilds an object of the same class whose
     ``get_config()`` equals the original's;
  3. ``keras.saving.serialize_keras_object`` names it ``"tfcompress>ClassName"``
     (registered under package "tfcompress"), survives a JSON text round trip, and
     ``deserialize_keras_object`` gives back the same class with an equal config.

``check_layer_serialization(factory, input_shape)`` adds, for layers: the output
shape equals ``compute_output_shape``, and each rebuilt layer, once called, has the
same number of weights (total, trainable, non-trainable) and, given the original's
weights, the same outputs.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable

import keras
import numpy as np

PACKAGE = "tfcompress"


def _json_form(value):
    """The value as JSON gives it back (tuples become lists, NumPy scalars plain)."""
    return json.loads(json.dumps(value, default=_numpy_default))


def _numpy_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-able: {value!r}")


def check_serialization(obj, *, package: str | None = PACKAGE) -> list:
    """Runs the shared serialization checks; raises AssertionError on the first failure.

    Args:
        obj: The object to check (anything with ``get_config``).
        package: The package it must be registered under; None skips the name check
            (a Keras built-in).

    Returns:
        ``[from_config(...), deserialize_keras_object(...)]``: the two rebuilt objects.
    """
    cls = type(obj)
    name = cls.__name__
    config = obj.get_config()
    try:
        json.dumps(config, default=_numpy_default)
    except TypeError as error:
        raise AssertionError(f"{name}.get_config() is not JSON-able: {error}") from error

    rebuilt = cls.from_config(copy.deepcopy(config))
    assert type(rebuilt) is cls, f"{name}.from_config built a {type(rebuilt).__name__}"
    assert rebuilt.get_config() == config, (
        f"{name}: get_config -> from_config -> get_config differs:\n"
        f"{config}\n!=\n{rebuilt.get_config()}"
    )

    serialized = keras.saving.serialize_keras_object(obj)
    if package is not None:
        expected = f"{package}>{name}"
        assert serialized.get("registered_name") == expected, (
            f"{name} is registered as {serialized.get('registered_name')!r}, expected "
            f"{expected!r}: decorate it with "
            f"keras.saving.register_keras_serializable(package={package!r})"
        )
    text = json.dumps(serialized, default=_numpy_default)
    restored = keras.saving.deserialize_keras_object(json.loads(text))
    assert type(restored) is cls, (
        f"{name}: deserialize_keras_object gave a {type(restored).__name__}"
    )
    assert _json_form(restored.get_config()) == _json_form(config), (
        f"{name}: serialize -> JSON -> deserialize changed the config:\n"
        f"{config}\n!=\n{restored.get_config()}"
    )
    return [rebuilt, restored]


def _weight_counts(layer: keras.layers.Layer) -> tuple[int, int, int]:
    return len(layer.weights), len(layer.trainable_weights), len(layer.non_trainable_weights)


def assert_output_shape(layer: keras.layers.Layer, input_shape, outputs) -> None:
    """``layer.compute_output_shape(input_shape)`` must be the shape ``outputs`` has."""
    expected = tuple(layer.compute_output_shape(tuple(input_shape)))
    actual = tuple(keras.ops.shape(outputs))
    assert expected == actual, (
        f"{type(layer).__name__}.compute_output_shape({tuple(input_shape)}) = {expected}, "
        f"but the call returns shape {actual}"
    )


def assert_same_weight_counts(original: keras.layers.Layer, other: keras.layers.Layer, how: str):
    """Equal numbers of weights: total, trainable, non-trainable."""
    assert _weight_counts(other) == _weight_counts(original), (
        f"{type(original).__name__} after {how} has (total, trainable, non-trainable) weights "
        f"{_weight_counts(other)}, the original {_weight_counts(original)}"
    )


def check_layer_serialization(
    layer_factory: Callable[[], keras.layers.Layer],
    input_shape: tuple[int, ...],
    *,
    seed: int = 0,
    atol: float = 1e-6,
    package: str | None = PACKAGE,
) -> keras.layers.Layer:
    """``check_serialization`` for a layer, plus output shape and weight counts.

    Args:
        layer_factory: Returns a fresh, unbuilt layer.
        input_shape: Input shape including the batch dimension.
        seed: Seed of the standard-normal inputs.
        atol: Tolerance between the original's and a rebuilt layer's outputs.
        package: As in ``check_serialization``.

    Returns:
        The built original layer.
    """
    x = np.random.default_rng(seed).standard_normal(input_shape).astype("float32")
    layer = layer_factory()
    outputs = layer(x, training=False)
    assert_output_shape(layer, input_shape, outputs)
    expected = keras.ops.convert_to_numpy(outputs)
    for how, rebuilt in zip(
        ("from_config", "deserialize_keras_object"), check_serialization(layer, package=package)
    ):
        rebuilt(x, training=False)
        assert_same_weight_counts(layer, rebuilt, how)
        rebuilt.set_weights(layer.get_weights())
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(rebuilt(x, training=False)),
            expected,
            atol=atol,
            err_msg=f"{type(layer).__name__} rebuilt by {how} gives different outputs",
        )
    return layer
