"""The one shared check every tfcompress layer test runs.

``check_layer`` builds a layer inside a model, then asserts, with numbers:
  1. eager and compiled calls (``tf.function`` on TensorFlow, ``jax.jit`` on
     JAX) give the same finite outputs, of the shape ``compute_output_shape``
     gives;
  2. ``get_config`` -> ``from_config`` rebuilds an equal config, and the rebuilt
     layer has as many weights (total, trainable, non-trainable) and, given the
     same weights, gives the same outputs;
  3. the shared serialization check (``serialization_checks.check_serialization``):
     registered as "tfcompress>ClassName", JSON round trip through
     ``keras.saving`` gives the same class and config;
  4. one optimizer step on a compiled model gives a finite loss and changes at
     least one trainable weight (the gradients flow);
  5. a ``.keras`` save and ``load_model(safe_mode=True)`` restores every
     variable (same counts) and gives identical outputs.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
from serialization_checks import assert_output_shape, assert_same_weight_counts, check_serialization


@dataclasses.dataclass
class LayerCheckResult:
    model: keras.Model
    outputs: np.ndarray
    loaded_model: keras.Model


def _to_numpy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def _compiled_call(layer: keras.layers.Layer, x: np.ndarray) -> np.ndarray:
    """The layer called inside the backend's compiler (graph / jit)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return _to_numpy(tf.function(lambda t: layer(t, training=False))(tf.constant(x)))
    if backend == "jax":
        import jax

        # Stateless call: the layer's variables enter the traced function as
        # arguments, as they do in Keras's own JAX train step.
        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        # stateless_call passes keyword arguments straight to call().
        kwargs = (
            {"training": False} if "training" in inspect.signature(layer.call).parameters else {}
        )

        def stateless(trainable, non_trainable, t):
            out, _ = layer.stateless_call(trainable, non_trainable, t, **kwargs)
            return out

        return _to_numpy(jax.jit(stateless)(trainable, non_trainable, x))
    return _to_numpy(layer(x, training=False))


def check_layer(
    layer_factory: Callable[[], keras.layers.Layer],
    input_shape: tuple[int, ...],
    tmp_path: Path,
    *,
    input_data: np.ndarray | None = None,
    atol: float = 1e-6,
    expect_trainable: bool = True,
    seed: int = 0,
    dtype_policy: str | None = None,
) -> LayerCheckResult:
    """Runs the shared layer checks; raises AssertionError on the first failure.

    Args:
        layer_factory: Returns a fresh, unbuilt layer each time it is called.
        input_shape: Input shape including the batch dimension.
        tmp_path: A directory for the ``.keras`` file (pytest's ``tmp_path``).
        input_data: Inputs to use instead of standard-normal random data.
        atol: Tolerance for eager vs compiled outputs.
        expect_trainable: Whether one training step must change a weight.
        seed: Seed of the random inputs and targets.
        dtype_policy: Run every check under this global dtype policy (e.g.
            ``"mixed_float16"``, restored afterwards); the layer's outputs must
            then have the policy's compute dtype and its float variables the
            policy's variable dtype.
    """
    if dtype_policy is not None:
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(dtype_policy)
        try:
            result = check_layer(
                layer_factory,
                input_shape,
                tmp_path,
                input_data=input_data,
                atol=atol,
                expect_trainable=expect_trainable,
                seed=seed,
            )
        finally:
            keras.config.set_dtype_policy(previous)
        policy = keras.dtype_policies.get(dtype_policy)
        layer = result.model.layers[-1]
        assert result.outputs.dtype == policy.compute_dtype, (
            f"outputs are {result.outputs.dtype}, expected {policy.compute_dtype}"
        )
        for variable in layer.weights:
            if "float" in str(variable.dtype):
                assert variable.dtype == policy.variable_dtype, (
                    f"variable {variable.path} is {variable.dtype}, "
                    f"expected {policy.variable_dtype}"
                )
        return result
    rng = np.random.default_rng(seed)
    x = input_data if input_data is not None else rng.standard_normal(input_shape).astype("float32")

    layer = layer_factory()
    inputs = keras.Input(shape=input_shape[1:], batch_size=None, dtype=str(x.dtype))
    model = keras.Model(inputs, layer(inputs))

    # 1. Eager vs graph.
    eager = _to_numpy(layer(x, training=False))
    graph = _compiled_call(layer, x)
    assert np.all(np.isfinite(eager)), "layer produced non-finite outputs"
    np.testing.assert_allclose(eager, graph, atol=atol, err_msg="eager != compiled output")
    assert_output_shape(layer, x.shape, eager)

    # 2. Config round trip.
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config, (
        f"get_config is not symmetric:\n{config}\n!=\n{clone.get_config()}"
    )
    clone_model = keras.Model(inputs, clone(inputs))
    assert_same_weight_counts(layer, clone, "from_config")
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(
        _to_numpy(clone_model(x, training=False)),
        eager,
        atol=atol,
        err_msg="layer rebuilt from its config gives different outputs",
    )

    # 3. Registration and the keras.saving round trip (the shared check).
    ours = type(layer).__module__.startswith("tfcompress")
    _, restored_layer = check_serialization(layer, package="tfcompress" if ours else None)
    restored_layer(x, training=False)
    assert_same_weight_counts(layer, restored_layer, "deserialize_keras_object")

    # 4. One training step.
    target = rng.standard_normal(eager.shape).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    before = [_to_numpy(w).copy() for w in model.trainable_weights]
    try:
        loss = model.train_on_batch(x, target)
    except ValueError as error:
        if "gradient" not in str(error).lower():
            raise
        raise AssertionError(
            f"one training step changed no trainable weight (no gradient?): {error}"
        ) from error
    assert np.isfinite(loss), f"training step gave loss {loss}"
    if expect_trainable:
        assert before, "layer has no trainable weights"
        changed = [
            not np.array_equal(b, _to_numpy(w)) for b, w in zip(before, model.trainable_weights)
        ]
        assert any(changed), "one training step changed no trainable weight (no gradient?)"

    # 5. .keras save/load.
    outputs = _to_numpy(model.predict(x, verbose=0))
    path = tmp_path / f"{layer.name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert_same_weight_counts(layer, loaded.layers[-1], ".keras save/load")
    for original, restored in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(
            _to_numpy(original), _to_numpy(restored), err_msg=f"variable {original.path} changed"
        )
    np.testing.assert_array_equal(
        _to_numpy(loaded.predict(x, verbose=0)), outputs, err_msg="loaded model differs"
    )
    return LayerCheckResult(model=model, outputs=outputs, loaded_model=loaded)
