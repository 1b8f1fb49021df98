"""tfc.allocate.bits (mixed precision for a file-size budget), per-layer one-shot bits and INT2 files."""

import itertools
import json

import keras
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

import tfcompress as tfc
from tfcompress.allocation.bits import BitsPlan, container_bits
from tfcompress.allocation.plan import Plan
from tfcompress.allocation.sensitivity import hutchinson_trace
from tfcompress.export.low_bit import pack_low_bit_weights

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _with_biases(model):
    """Trained-looking biases: rewriting a weight's scale must rescale its integer bias."""
    rng = np.random.default_rng(7)
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0, 0.3, size=layer.bias.shape).astype("float32"))
    return model


def _mlp():
    keras.utils.set_random_seed(3)
    return _with_biases(
        keras.Sequential(
            [
                keras.Input((32,)),
                keras.layers.Dense(64, activation="relu", name="a"),
                keras.layers.Dense(48, activation="relu", name="b"),
                keras.layers.Dense(10, name="c"),
            ],
            name="mlp",
        )
    )


@pytest.fixture(scope="module")
def setup():
    model = _mlp()
    x = np.random.default_rng(0).normal(size=(192, 32)).astype("float32")
    y = np.argmax(model.predict(x, verbose=0) + np.random.default_rng(1).normal(size=(192, 10)), -1)
    model.compile(keras.optimizers.Adam(3e-3), LOSS)
    model.fit(x, y, epochs=40, batch_size=64, verbose=0)  # near a minimum: a positive Hessian
    return model, x, y


@pytest.fixture(scope="module")
def plan(setup):
    model, x, y = setup
    return tfc.allocate.bits(
        model,
        x,
        target_ratio=0.25,
        choices=(2, 4, 8),
        error="loss",
        targets=y,
        loss=LOSS,
        verbose=0,
    )


def _tensor_types(flatbuffer):
    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    graph = model.Subgraphs(0)
    return [graph.Tensors(i).Type() for i in range(graph.TensorsLength())]


def test_container_bits_follow_what_litert_runs():
    assert [container_bits("QuantDense", b) for b in (2, 3, 4, 5, 8)] == [2, 4, 4, 8, 8]
    assert [container_bits("QuantConv2D", b) for b in (2, 4, 8)] == [4, 4, 8]
    assert container_bits("EinsumDense", 2) == 2 and container_bits("EinsumDense", 6) == 8


def test_oneshot_quantize_takes_bits_per_layer(setup):
    model, x, _ = setup
    quant, report = tfc.oneshot.quantize(
        model, x, bits={"a": 2, "b": 4, "c": 8}, per_channel=False, verbose=0, return_report=True
    )
    assert {r.name: r.bits for r in report.layers} == {"a": 2, "b": 4, "c": 8}
    assert report.bits is None  # mixed
    for name, bits in (("a", 2), ("b", 4), ("c", 8)):
        kernel = np.asarray(quant.get_layer(name).kernel)
        step = float(np.asarray(quant.get_layer(name).quantizer_state["kernel"]["step"]))
        levels = np.round(kernel / step)
        np.testing.assert_allclose(kernel, levels * step, atol=1e-6)
        assert np.abs(levels).max() <= 2 ** (bits - 1) - 1
    with pytest.raises(ValueError, match="pass layers=None"):
        tfc.oneshot.quantize(model, x, bits={"a": 4}, layers=["a"], verbose=0)
    with pytest.raises(ValueError, match=r"bits\['a'\]"):
        tfc.oneshot.quantize(model, x, bits={"a": 9}, verbose=0)
    with pytest.raises(ValueError, match="names no layer of model"):
        tfc.oneshot.quantize(model, x, bits={"zz": 4}, verbose=0)
    with pytest.raises(ValueError, match="empty mapping"):
        tfc.oneshot.quantize(model, x, bits={}, verbose=0)


def test_two_bit_dense_weights_are_int2_in_the_file(setup, tmp_path):
    model, x, _ = setup
    quant = tfc.oneshot.quantize(model, x, bits=2, per_channel=False, verbose=0)
    report = tfc.tflite_export.export(
        quant, tmp_path / "m.tflite", quantization="int8", verify_data=x[:64]
    )
    assert report.int2_weights == 3
    flatbuffer = (tmp_path / "m.tflite").read_bytes()
    assert _tensor_types(flatbuffer).count(schema.TensorType.INT2) == 3
    assert report.top1_agreement >= 0.95  # the requantization multiplier may move one LSB
    # Already packed: nothing left to do.
    again = pack_low_bit_weights(flatbuffer)
    assert again.int4 == () and again.int2 == () and again.flatbuffer == flatbuffer
    # 4-bit weights are not ternary: untouched.
    four = tfc.oneshot.quantize(model, x, bits=4, per_channel=False, verbose=0)
    report4 = tfc.tflite_export.export(four, tmp_path / "m4.tflite", quantization="int8")
    assert report4.int2_weights == 0 and report4.int4_weights == 0  # the converter's own INT4
    weights = 32 * 64 + 64 * 48 + 48 * 10
    assert report4.bytes - report.bytes == pytest.approx(weights / 4, abs=64)


def test_int2_rewrite_keeps_the_weights_and_outputs_within_two_steps(setup, tmp_path):
    model, x, _ = setup
    quant = tfc.oneshot.quantize(model, x, bits=2, per_channel=False, verbose=0)
    from tfcompress.export.converter import convert

    int4 = convert(quant, "int8", None)
    packed = pack_low_bit_weights(int4)
    assert len(packed.int2) == 3 and packed.int4 == () and packed.saved_bytes > 0
    outputs = []
    for flatbuffer in (int4, packed.flatbuffer):
        lite = tfc.tflite_export.TFLiteModel(flatbuffer)
        outputs.append(np.asarray(lite.predict(x[:64]), np.float64))
    # Same real weights. The integer bias is rescaled with the weight scale (rounded), and
    # the INT2 layer runs in LiteRT's builtin kernel where XNNPACK ran the INT4 one, so an
    # output can move by a step or two of the int8 output; against Keras both are as close.
    keras_out = np.asarray(quant.predict(x[:64], verbose=0), np.float64)
    errors = [np.abs(o - keras_out).mean() for o in outputs]
    moved = np.abs(outputs[0] - outputs[1])
    step = moved[moved > 1e-7].min() if np.any(moved > 1e-7) else 0.0
    assert moved.max() <= 2.001 * step
    assert errors[1] <= errors[0] + step
    assert np.mean(outputs[0].argmax(-1) == outputs[1].argmax(-1)) >= 0.9


def test_calibrated_int8_weights_on_a_4_bit_grid_become_int4(tmp_path):
    # A sequence model with LayerNorm needs calibration, and the converter then re-quantizes
    # every weight to INT8 per channel; the rewrite recovers the 4-bit integers (INT4) and
    # the 2-bit ones (INT2), rescaling the integer biases with the weight scales.
    keras.utils.set_random_seed(5)
    model = _with_biases(
        keras.Sequential(
            [
                keras.Input((8, 32)),
                keras.layers.Dense(64, activation="gelu", name="up"),
                keras.layers.LayerNormalization(name="norm"),
                keras.layers.Dense(16, name="down"),
            ]
        )
    )
    x = np.random.default_rng(0).normal(size=(96, 8, 32)).astype("float32")
    files = {}
    for bits in ({"up": 4, "down": 4}, {"up": 2, "down": 8}, {"up": 8, "down": 8}):
        quant = tfc.oneshot.quantize(model, x, bits=bits, per_channel=False, verbose=0)
        key = tuple(bits.values())
        files[key] = tfc.tflite_export.export(
            quant,
            tmp_path / f"{key}.tflite",
            quantization="int8",
            representative_data=x,
            verify_data=x[:32],
        )
    assert (files[(4, 4)].int4_weights, files[(4, 4)].int2_weights) == (2, 0)
    assert (files[(2, 8)].int4_weights, files[(2, 8)].int2_weights) == (0, 1)
    assert (files[(8, 8)].int4_weights, files[(8, 8)].int2_weights) == (0, 0)
    # half a byte per weight, plus the per-channel scales and zero points (4 + 8 bytes per
    # output channel) that a per-tensor grid does not need
    weights, channels = 32 * 64 + 64 * 16, 64 + 16
    saved = files[(8, 8)].bytes - files[(4, 4)].bytes
    assert saved == pytest.approx(weights / 2 + 12 * channels, abs=64)
    for report in files.values():  # as close to Keras as the INT8 file (ranges calibrated)
        assert report.verified and report.mean_abs_diff < 0.1


def test_plan_is_the_optimal_choice_within_the_budget(plan):
    costs = [layer.option_costs for layer in plan.layers]
    errors = [layer.option_errors for layer in plan.layers]
    best = min(
        sum(errors[i][k] for i, k in enumerate(combo))
        for combo in itertools.product(range(3), repeat=len(costs))
        if plan.fixed_cost + sum(costs[i][k] for i, k in enumerate(combo)) <= plan.budget
    )
    assert plan.total_error == pytest.approx(best)
    assert plan.total_cost <= plan.budget
    # the widest option barely changes the loss (8-bit weights)
    for layer in plan.layers:
        assert abs(layer.option_errors[-1]) < 0.01
    text = str(plan)
    assert "BitsPlan: 3 layers" in text and "budget" in text and "loss error" in text


def test_predicted_bytes_are_the_files_bytes(setup, plan, tmp_path):
    model = setup[0]
    small = plan.apply(model)
    report = tfc.tflite_export.export(small, tmp_path / "mixed.tflite", quantization="int8")
    assert abs(report.bytes - plan.total_cost) <= 64 + 16 * len(plan)  # flatbuffer padding
    assert report.bytes <= plan.budget + 64


def test_target_bits_is_the_uniform_files_size(setup, tmp_path):
    model, x, y = setup
    plan = tfc.allocate.bits(model, x, target_bits=4, error="loss", targets=y, loss=LOSS, verbose=0)
    four = tfc.oneshot.quantize(model, x, bits=4, per_channel=False, verbose=0)
    uniform = tfc.tflite_export.export(four, tmp_path / "u4.tflite", quantization="int8")
    assert abs(plan.budget - uniform.bytes) <= 64
    mixed = tfc.tflite_export.export(plan.apply(model), tmp_path / "m.tflite", quantization="int8")
    assert mixed.bytes <= uniform.bytes + 64


def test_more_budget_never_costs_quality(setup):
    model, x, y = setup
    totals, plans = [], []
    for ratio in (0.2, 0.26, 0.4):
        p = tfc.allocate.bits(
            model, x, target_ratio=ratio, error="loss", targets=y, loss=LOSS, verbose=0
        )
        totals.append(p.total_error)
        plans.append(p)
    assert totals[0] >= totals[1] >= totals[2]
    # Re-solving the widest plan's measurements for the other budgets gives what bits() gives.
    for direct in plans[:2]:
        again = plans[2].with_budget(int(direct.budget))
        assert again.choices == direct.choices
        assert again.total_cost == pytest.approx(direct.total_cost)
        assert again.total_error == pytest.approx(direct.total_error, rel=1e-6)
        assert again.total_cost <= direct.budget and again is not plans[2]
    assert plans[2].budget > plans[0].budget  # unchanged by the re-solves
    smallest = plans[2].fixed_cost + sum(min(c.option_costs) for c in plans[2].layers)
    for bad in (int(smallest) - 1, int(plans[2].dense_cost) + 1):
        with pytest.raises(ValueError, match="target_bytes must lie between"):
            plans[2].with_budget(bad)


def test_plan_converts_to_quantize_config_and_json(setup, plan):
    model, x, _ = setup
    config = plan.to_quantize_config()
    qat = tfc.quantize_model(model, config)
    for name, bits in plan.choices.items():
        assert qat.get_layer(name).kernel_quantizer.bits == bits
    again = BitsPlan.from_dict(json.loads(plan.to_json()))
    assert again.choices == plan.choices and again.total_cost == plan.total_cost
    assert isinstance(again, Plan) and again.method == plan.method
    with pytest.raises(ValueError, match="pass the calibration inputs"):
        again.apply(model)
    assert again.apply(model, x).get_layer("a").kernel_quantizer.bits == plan["a"]
    with pytest.raises(KeyError, match="not in this plan"):
        plan["nope"]


def test_output_and_hessian_errors_rank_narrow_widths_worse(setup):
    model, x, y = setup
    for error in ("output", "hessian"):
        p = tfc.allocate.bits(
            model, x, target_ratio=0.25, error=error, targets=y, loss=LOSS, verbose=0
        )
        for layer in p.layers:
            assert layer.option_errors[0] > layer.option_errors[1] >= layer.option_errors[2] - 1e-9


def test_hutchinson_trace_matches_the_exact_trace_of_a_quadratic():
    # loss = mean((x w)^2) over one output: H = 2 X^T X / n, trace known exactly.
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1, use_bias=False)])
    exact = 2 * np.sum(x**2) / len(x)
    estimate = hutchinson_trace(
        model,
        model.layers[0].kernel,
        x,
        np.zeros((64, 1), "float32"),
        keras.losses.MeanSquaredError(),
        samples=64,
        seed=1,
    )
    assert estimate == pytest.approx(exact, rel=0.02)  # Rademacher: exact on a diagonal-heavy H


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target_ratio": 0.01}, r"unreachable .* smallest file is"),
        ({"target_ratio": 1.5}, r"outside \(0, 1\].*above the dense model"),
        ({"target_ratio": 0.0}, r"outside \(0, 1\]"),
        ({}, "exactly one of target_bytes, target_ratio and target_bits"),
        ({"target_bits": 9}, r"target_bits must be one of"),
        ({"target_bits": 3.5}, r"target_bits must be one of"),
        ({"target_ratio": 0.2, "target_bytes": 1000}, "exactly one"),
        ({"target_ratio": 0.2, "choices": ()}, "empty"),
        ({"target_ratio": 0.2, "choices": (1, 4)}, "holds 1"),
        ({"target_ratio": 0.2, "choices": (4, 4)}, "repeats"),
        ({"target_ratio": 0.2, "error": "loss"}, "needs targets"),
        ({"target_ratio": 0.2, "error": "nope"}, "is not one of"),
        ({"target_bytes": -5}, "positive integer"),
        ({"target_bytes": 10**9}, "above the float32 file"),
    ],
)
def test_bad_budgets_and_choices_are_named(setup, kwargs, message):
    model, x, _ = setup
    before = [np.array(w) for w in model.get_weights()]
    with pytest.raises(ValueError, match=message):
        tfc.allocate.bits(model, x, verbose=0, **kwargs)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_missing_calibration_data_is_named(setup):
    model, x, _ = setup
    with pytest.raises(ValueError, match="calibration_data is None"):
        tfc.allocate.bits(model, None, target_ratio=0.2, verbose=0)
    with pytest.raises(ValueError, match="empty"):
        tfc.allocate.bits(model, x[:0], target_ratio=0.2, verbose=0)


def test_layer_tensors_are_found_by_name_in_the_file(tmp_path):
    from tfcompress.allocation.file_costs import layer_tensor_bytes, name_pattern

    # default names: "dense" must not claim "dense_1"'s tensor (tracing appends _<n>)
    assert name_pattern("dense").search("sequential_1/dense_1/MatMul")
    assert not name_pattern("dense").search("sequential_1/dense_1_2/MatMul")
    assert name_pattern("dense_1").search("sequential_1/dense_1_2/MatMul;x/dense_1_2/Fake")
    assert name_pattern("block0_attn/key").search("byte_lm_1/block0_attn_1/key_1/MatMul")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(32), keras.layers.Dense(8)], name="net"
    )
    x = np.random.default_rng(0).normal(size=(64, 16)).astype("float32")
    quant = tfc.oneshot.quantize(model, x, bits=8, per_channel=False, verbose=0)
    tfc.tflite_export.export(quant, tmp_path / "m.tflite", quantization="int8", verify=False)
    names = [layer.name for layer in model.layers]
    found = layer_tensor_bytes((tmp_path / "m.tflite").read_bytes(), names)
    # INT8 data, one scale (4 B) and one zero point (8 B) per tensor
    assert found == {names[0]: 16 * 32 + 12, names[1]: 32 * 8 + 12}


def test_int2_projection_with_a_per_channel_bias_prepares_in_litert(tmp_path):
    # Calibrated export of a 2-bit attention layer: the converter writes each projection
    # per channel (INT8) with a per-channel bias; on the ternary grid all channel scales are
    # equal, so the INT2 weight is per tensor, and LiteRT's per-tensor FULLY_CONNECTED path
    # reads the bias's single scale: the bias must be per tensor too or the op fails to
    # prepare ("scale_diff / output_scale <= 0.02"), as the byte LM's 2-bit files did.
    keras.utils.set_random_seed(5)
    inputs = keras.Input((8, 32))
    attended = keras.layers.MultiHeadAttention(2, 16, name="attn")(inputs, inputs)
    normed = keras.layers.LayerNormalization(name="norm")(attended + inputs)
    model = _with_biases(keras.Model(inputs, keras.layers.Dense(16, name="down")(normed)))
    for variable in model.get_layer("attn").weights:
        if "bias" in variable.path:
            variable.assign(np.random.default_rng(1).normal(0, 0.3, variable.shape))
    x = np.random.default_rng(0).normal(size=(96, 8, 32)).astype("float32")
    quant = tfc.oneshot.quantize(model, x, bits=2, per_channel=False, verbose=0)
    report = tfc.tflite_export.export(
        quant,
        tmp_path / "attn2.tflite",
        quantization="int8",
        representative_data=x,
        verify_data=x[:32],
    )
    assert report.int2_weights == 5 and report.verified
    assert report.mean_abs_diff < 0.1
    flatbuffer = (tmp_path / "attn2.tflite").read_bytes()
    graph = schema.Model.GetRootAsModel(flatbuffer, 0).Subgraphs(0)
    checked = 0
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        if op.InputsLength() < 3 or op.Inputs(2) < 0:
            continue
        weight, bias = graph.Tensors(op.Inputs(1)), graph.Tensors(op.Inputs(2))
        if weight.Type() == schema.TensorType.INT2 and weight.Quantization().ScaleLength() == 1:
            assert bias.Quantization().ScaleLength() == 1
            checked += 1
    assert checked >= 1


def test_lattice_accepts_either_rounding_at_an_exact_half():
    from tfcompress.export.low_bit import _lattice

    # 2-bit grid {-2..2} * s stored as INT8 per channel: k=1 is 127/2 = 63.5, which the
    # converter rounds to 63 or 64 depending on float32 noise in its scale; both are the grid
    for row in ([63, 127, -63, 0, -127], [64, 127, -64, 0, -127], [63, 127, -64, 0, -127]):
        found = _lattice(np.array([row], np.int16), 127)
        assert found is not None, row
        ks, ms = found
        assert ms.tolist() == [2] and ks.tolist() == [[1, 2, -1, 0, -2]]
    # an 8-bit row is on no grid of at most 7 levels per side
    assert _lattice(np.arange(-127, 128, 3, dtype=np.int16)[None], 127) is None
    # one step off the grid is not accepted
    assert _lattice(np.array([[62, 127, -63]], np.int16), 127) is None
