"""QAT, binary and low-rank layers (and the transforms that make them) under ``mixed_float16``.

Under the policy a layer computes in float16 and keeps float32 variables;
``compile`` wraps the optimizer in a ``LossScaleOptimizer``. Each test restores
the global policy it found. Tolerances (float16 has an 11-bit significand):

* float layers (binary, low-rank): outputs within 1e-2 of the output scale of
  the float32 layer with the same weights;
* fake-quantized layers: a float16 rounding can move a value across a
  quantization threshold, so an element may differ by one grid step; at most
  5% of elements differ by more than 1e-2 of the scale, and none by more than
  two grid steps of the layer's output quantizer (plus 1e-2 of the scale);
* transformed digits models with the same weights: top-1 agreement with the
  float32 twin >= 95% on 128 test digits and outputs within 1e-2 of the scale
  (0.1 for the QAT model: grid steps again). After 3 SGD steps (a
  LossScaleOptimizer may skip a step at its initial scale, so trajectories may
  part) accuracy is within 5 points of the twin's; the TFLite export (traced
  with float32 compute) agrees with the Keras model on >= 95% of top-1.
"""

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tests.layer_checks import check_layer

L = tfc.layers
Q = tfc.quantizers

LAYERS = {
    "QuantDense": (lambda: L.QuantDense(8, input_quantizer="int8_activation"), (4, 16)),
    "QuantDense_lsq_pact": (
        lambda: L.QuantDense(
            8,
            kernel_quantizer=Q.LSQQuantizer(bits=4),
            activation_quantizer=Q.PACTQuantizer(bits=4),
        ),
        (4, 16),
    ),
    "QuantConv2D": (lambda: L.QuantConv2D(4, 3, input_quantizer="int8_activation"), (2, 6, 6, 3)),
    "QuantDepthwiseConv2D": (lambda: L.QuantDepthwiseConv2D(3), (2, 6, 6, 3)),
    "QuantizeActivation": (lambda: L.QuantizeActivation("int8_activation"), (4, 16)),
    "BinaryDense": (lambda: L.BinaryDense(8, input_quantizer="ste_sign"), (4, 16)),
    "BinaryDense_ternary": (lambda: L.BinaryDense(8, kernel_quantizer="ste_tern"), (4, 16)),
    "BinaryConv2D": (lambda: L.BinaryConv2D(4, 3, input_quantizer="ste_sign"), (2, 6, 6, 3)),
    "BinaryDepthwiseConv2D": (lambda: L.BinaryDepthwiseConv2D(3), (2, 6, 6, 3)),
    "LowRankDense": (lambda: L.LowRankDense(8, rank=3), (4, 16)),
    "LowRankConv2D": (lambda: L.LowRankConv2D(4, 3, rank=2), (2, 6, 6, 3)),
}
QUANTIZED_OUTPUT = {
    "QuantDense",
    "QuantDense_lsq_pact",
    "QuantConv2D",
    "QuantDepthwiseConv2D",
    "QuantizeActivation",
}


@pytest.fixture
def mixed_policy():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _float32_twin(layer_factory, model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Outputs of the same layer built under float32 with ``model``'s weights."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        layer = layer_factory()
        twin = keras.Model(inputs := keras.Input(x.shape[1:]), layer(inputs))
        twin.set_weights(model.get_weights())
        return np.asarray(twin(x, training=False))
    finally:
        keras.config.set_dtype_policy(previous)


def _grid_step(layer) -> float:
    """The output quantizer's grid step (0 when the output is not quantized)."""
    quantizer = getattr(layer, "activation_quantizer", None) or getattr(layer, "quantizer", None)
    state = getattr(layer, "_quantizer_state", {}).get("activation", {})
    if quantizer is None:
        return 0.0
    levels = 2**quantizer.bits - 1
    if "min" in state:
        return (float(state["max"].numpy()) - float(state["min"].numpy())) / levels
    if "alpha" in state:
        return float(state["alpha"].numpy()) / levels
    return 0.0


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_under_mixed_float16(name, tmp_path):
    factory, shape = LAYERS[name]
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    # Builds, calls eagerly and traced, round-trips config and .keras, trains one
    # step (LossScaleOptimizer), all under mixed_float16; float16 outputs and
    # float32 variables are asserted by check_layer.
    result = check_layer(
        factory,
        shape,
        tmp_path,
        input_data=x,
        dtype_policy="mixed_float16",
        expect_trainable=name != "QuantizeActivation",
    )
    assert isinstance(result.model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert result.model.layers[-1].compute_dtype == "float16"
    mixed = np.asarray(result.model(x, training=False)).astype("float32")
    reference = _float32_twin(factory, result.model, x)
    scale = max(1.0, float(np.abs(reference).max()))
    diff = np.abs(mixed - reference)
    print(f"{name}: max diff {diff.max():.2e} (scale {scale:.2f})")
    if name in QUANTIZED_OUTPUT:
        step = _grid_step(result.model.layers[-1])
        assert step > 0
        assert diff.max() <= 2 * step + 1e-2 * scale, (diff.max(), step)
        assert (diff > 1e-2 * scale).mean() <= 0.05
    else:
        assert diff.max() <= 1e-2 * scale, diff.max()


def _digits_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, use_bias=False, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(name="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.Dense(10, name="logits"),
        ]
    )


def _train(model: keras.Model, x, y) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.SGD(0.02),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    return model


TRANSFORMS = {
    "quantize_model": (lambda m: tfc.quantize_model(m), "int8", "QuantDense"),
    "binarize_model": (lambda m: tfc.binarize_model(m, keep_first=False), None, "BinaryDense"),
    "factorize_model": (lambda m: tfc.factorize_model(m, rank=4, verbose=0), None, "LowRankDense"),
}


@pytest.fixture(scope="module")
def float_digits_model(digits):
    model = _digits_model()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        model.compile(
            optimizer=keras.optimizers.Adam(1e-2),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(digits.x_train[:512], digits.y_train[:512], batch_size=32, epochs=3, verbose=0)
    finally:
        keras.config.set_dtype_policy(previous)
    return model


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transform_under_mixed_float16(name, digits, float_digits_model, tmp_path, mixed_policy):
    transform, quantization, layer_class = TRANSFORMS[name]
    x, y = digits.x_train[:96], digits.y_train[:96]
    probe = digits.x_test[:128]
    mixed = _digits_model()
    mixed.set_weights(float_digits_model.get_weights())
    converted = transform(mixed)
    assert any(type(layer).__name__ == layer_class for layer in converted.layers)
    assert all(layer.dtype_policy.name == "mixed_float16" for layer in converted.layers)
    keras.config.set_dtype_policy("float32")
    twin = transform(float_digits_model)
    keras.config.set_dtype_policy("mixed_float16")
    labels = digits.y_test[:128]

    # Same weights: the float16 model computes what the float32 one does.
    out16 = np.asarray(converted(probe, training=False))
    out32 = np.asarray(twin(probe, training=False))
    assert out16.dtype == np.float16
    assert float((out16.argmax(-1) == out32.argmax(-1)).mean()) >= 0.95
    # (fake-quant outputs may differ by a grid step, see the module docstring)
    tolerance = 0.1 if quantization == "int8" else 1e-2
    print(name, "max diff before training", np.abs(out16 - out32).max())
    assert np.abs(out16 - out32).max() <= tolerance * max(1.0, np.abs(out32).max())

    # Training: LossScaleOptimizer, float32 variables; it may skip a step the
    # float32 twin takes (overflow at the initial loss scale), so compare
    # accuracy rather than outputs after training.
    _train(converted, x, y)
    _train(twin, x, y)
    assert isinstance(converted.optimizer, keras.optimizers.LossScaleOptimizer)
    assert all(v.dtype == "float32" for v in converted.weights if "float" in str(v.dtype))
    acc16 = tfc.models.accuracy(converted, probe, labels)
    acc32 = tfc.models.accuracy(twin, probe, labels)
    print(name, "accuracy float16", acc16, "float32", acc32)
    assert acc16 >= acc32 - 0.05, (acc16, acc32)

    report = tfc.tflite_export.export(
        converted,
        tmp_path / f"{name}.tflite",
        quantization=quantization,
        verify_data=probe,
        verify_labels=labels,
        verbose=0,
    )
    assert report.top1_agreement >= 0.95, report
    # The export traced float32 compute and handed the layers back as they were.
    assert all(layer.dtype_policy.name == "mixed_float16" for layer in converted.layers)
    assert np.asarray(converted(probe[:2], training=False)).dtype == np.float16
    ops = report.op_counts
    if quantization == "int8":
        assert any(key.endswith("[int8]") and "FULLY_CONNECTED" in key for key in ops), ops
    else:
        assert all("float16" not in key for key in ops), ops
