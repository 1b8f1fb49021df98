"""The suite's technique methods (tfcompress.bench.methods.*): each runs once through the
suite on the tiny digits CNN (first level, seed 0), and their helpers on tiny models."""

from __future__ import annotations

import math
import re

import keras
import numpy as np
import pytest

from tfcompress.bench import get_method
from tfcompress.bench.methods.budget import budget_steps, schedule_steps
from tfcompress.bench.methods.lowrank import factorizable_params
from tfcompress.bench.methods.pruning import _MagnitudeStart, channel_prunable_layers
from tfcompress.bench.suite import run_suite
from tfcompress.bench.tfmot_subprocess import (
    TFMOTUnavailableError,
    sequential_spec,
    tfmot_available,
    tfmot_prune,
)
from tfcompress.bench.workloads import (
    get_workload,
    list_workloads,
    mobilenet_style,
    whole_batches,
)
from tfcompress.datasets import Split
from tfcompress.language_model import byte_lm
from tfcompress.models import digits_cnn, digits_mlp

METHODS = [
    "gradual_magnitude",
    "channel_shrink",
    "n_m_sparsity",
    "rigl",
    "snip",
    "qat",
    "binarize",
    "lowrank_svd",
    "kmeans_cluster",
    "distill_magnitude",
    "tfmot_magnitude",
]
# digits_cnn: 3x3 convs 1->32->64->128, dense 512->128->10.
CNN_BIASES = 32 + 64 + 128 + 128 + 10
CNN_KERNELS = 9 * 32 + 9 * 32 * 64 + 9 * 64 * 128 + 512 * 128 + 128 * 10


def _cnn_params(c1: int, c2: int, c3: int, d1: int) -> int:
    """Parameters of a digits CNN with these widths (the flatten sees 2x2 positions)."""
    return (
        (9 * c1 + c1)
        + (9 * c1 * c2 + c2)
        + (9 * c2 * c3 + c3)
        + (4 * c3 * d1 + d1)
        + (d1 * 10 + 10)
    )


@pytest.fixture(scope="module")
def tiny_arms(tmp_path_factory):
    document = run_suite(
        ["digits_cnn"],
        METHODS,
        tiny=True,
        latency=False,
        folder=tmp_path_factory.mktemp("methods"),
        verbose=0,
        log=lambda text: None,
    )
    (entry,) = document["workloads"]
    return entry["dense"], {a["method"]: a for a in entry["arms"]}


def test_every_method_runs_once_on_the_tiny_cnn(tiny_arms):
    dense, arms = tiny_arms
    assert dense["params"] == _cnn_params(32, 64, 128, 128) == CNN_KERNELS + CNN_BIASES
    assert set(arms) == set(METHODS)
    for name, arm in arms.items():
        if name == "tfmot_magnitude" and tfmot_available() is not None:
            continue  # checked below: a recorded, clear error
        assert arm["errors"] == [], (name, arm["errors"])
        assert arm["level"] == get_method(name).levels[0]
        # Mild first levels after one fine-tune epoch stay far above chance (0.1).
        assert 0.5 < arm["quality_mean"] <= 1.0, (name, arm["quality_mean"])
        assert arm["tflite_bytes"] > 0 and arm["gzip_bytes"] < arm["tflite_bytes"]


def test_unstructured_methods_reach_their_sparsity(tiny_arms):
    dense, arms = tiny_arms
    half_kernels = CNN_BIASES + math.ceil(CNN_KERNELS / 2)
    for name in ("gradual_magnitude", "rigl", "snip", "distill_magnitude", "n_m_sparsity"):
        arm = arms[name]
        assert arm["params"] == dense["params"]
        # Half of the kernels are zero (the biases are not pruned).
        assert abs(arm["nonzero_params"] - half_kernels) <= 0.002 * dense["params"], name
    for name in ("gradual_magnitude", "distill_magnitude", "n_m_sparsity"):  # every layer at 50%
        assert arms[name]["effective_macs"] == pytest.approx(dense["macs"] / 2, rel=0.002)
    for name in ("rigl", "snip"):  # ERK / global: 50% overall, not per layer
        assert arms[name]["effective_macs"] != pytest.approx(dense["macs"] / 2, rel=0.002)


def test_channel_shrink_removes_a_quarter_of_the_channels(tiny_arms):
    dense, arms = tiny_arms
    arm = arms["channel_shrink"]
    assert arm["params"] == _cnn_params(24, 48, 96, 96)  # 25% of each pruned layer's channels
    assert arm["macs"] < 0.6 * dense["macs"]
    assert "conv1, conv2, conv3, dense1" in arm["runs"][0]["notes"]


def test_quantized_and_binary_methods_export_integer_files(tiny_arms):
    dense, arms = tiny_arms
    qat, binary = arms["qat"], arms["binarize"]
    assert qat["export"] == "int8" and qat["runs"][0]["quality_from"] == "tflite"
    assert binary["export"] == "dynamic" and binary["runs"][0]["quality_from"] == "tflite"
    for arm in (qat, binary):  # int8 weights: about a quarter of the float file
        assert arm["tflite_bytes"] < 0.3 * dense["tflite_bytes"]
        assert arm["verified"]


def test_lowrank_and_clustering_reach_their_level(tiny_arms):
    dense, arms = tiny_arms
    lowrank = arms["lowrank_svd"]
    assert CNN_BIASES + 0.45 * CNN_KERNELS < lowrank["params"] <= CNN_BIASES + 0.5 * CNN_KERNELS
    assert lowrank["macs"] < 0.6 * dense["macs"]
    cluster = arms["kmeans_cluster"]
    packed = int(re.search(r"tfc\.pack (\d+) bytes", cluster["runs"][0]["notes"]).group(1))
    # 32 shared values: 5-bit indices, under a quarter of the float32 weights' bytes.
    assert packed < 0.25 * 4 * dense["params"]
    assert cluster["gzip_bytes"] < 0.5 * dense["gzip_bytes"]


def test_tfmot_arm_runs_or_says_why_not(tiny_arms):
    dense, arms = tiny_arms
    arm = arms["tfmot_magnitude"]
    reason = tfmot_available()
    if reason is not None:
        (error,) = arm["errors"]
        assert "TFMOTUnavailableError" in error and "TFCOMPRESS_TFMOT_PYTHON" in error
        return
    assert arm["errors"] == [] and arm["runs"][0]["quality_from"] == "method"
    half_kernels = CNN_BIASES + math.ceil(CNN_KERNELS / 2)
    assert abs(arm["nonzero_params"] - half_kernels) <= 0.002 * dense["params"]


def test_channel_prunable_layers_follow_what_shrink_can_remove():
    assert channel_prunable_layers(digits_cnn()) == ["conv1", "conv2", "conv3", "dense1"]
    assert channel_prunable_layers(digits_mlp()) == ["dense1", "dense2"]
    # Inverted residuals: the expansions and the head; projections feeding a residual
    # add (or the stem, which feeds one) stay; b3 has no residual after it.
    assert channel_prunable_layers(mobilenet_style()) == [
        "b0_expand",
        "b1_expand",
        "b2_expand",
        "b3_expand",
        "b3_project",
        "head",
    ]
    # The language model: only the FFN's hidden units (everything else meets a residual).
    lm = byte_lm(context=16, d_model=32, num_layers=2, num_heads=2, ffn_units=64)
    assert channel_prunable_layers(lm) == ["block0_ffn_up", "block1_ffn_up"]
    flat = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="out")])
    with pytest.raises(ValueError, match="no Dense/Conv layer"):
        channel_prunable_layers(flat)


def test_budget_steps_and_schedule():
    workload = get_workload("digits_cnn", tiny=True)  # 1 epoch of 1,438 images, batch 32
    assert budget_steps(workload) == 1438 // 32 == 44  # whole batches only
    assert schedule_steps(workload) == (29, 3)
    # The fine-tune takes exactly that many optimizer steps, all on whole batches.
    model = workload.build()
    workload.compile_for_finetune(model)
    workload.finetune(model)
    assert int(model.optimizer.iterations) == 44
    (x, _), *_ = whole_batches(np.zeros((70, 2)), np.zeros(70), 32, seed=0).as_numpy_iterator()
    assert x.shape == (32, 2)
    assert sum(1 for _ in whole_batches(np.zeros((70, 2)), np.zeros(70), 32, seed=0)) == 2
    assert get_workload("digits_cnn").finetune_epochs == 2  # full and quick budgets are equal
    assert budget_steps(get_workload("byte_lm", tiny=True)) == 5
    with pytest.raises(TypeError, match="fine-tune budget"):
        budget_steps(get_workload("mobilenetv2_035"))


def test_factorizable_params_counts_dense_and_conv_kernels():
    assert factorizable_params(digits_cnn()) == CNN_KERNELS
    lm = byte_lm(context=16, d_model=32, num_layers=1, num_heads=2, ffn_units=64)
    # FFN up/down and the head; attention (EinsumDense) and embeddings are not factorizable.
    assert factorizable_params(lm) == 32 * 64 + 64 * 32 + 32 * 256


def test_rigl_starts_from_the_largest_weights():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, name="d")])
    kernel = model.get_layer("d").kernel.numpy().copy()
    model.compile(keras.optimizers.SGD(0.0), "mse")
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    y = np.zeros((16, 8), "float32")
    callback = _MagnitudeStart(
        0.75, distribution="uniform", update_frequency=100, end_step=100, data=(x, y)
    )
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[callback])
    kept = model.get_layer("d").kernel.numpy() != 0
    threshold = np.sort(np.abs(kernel).ravel())[-12]  # 25% of 48 weights
    np.testing.assert_array_equal(kept, np.abs(kernel) >= threshold)


def test_tfmot_refuses_clearly_before_running():
    functional = keras.Model(*(lambda i: (i, keras.layers.Dense(2)(i)))(keras.Input((3,))))
    with pytest.raises(ValueError, match=r"keras\.Sequential"):
        sequential_spec(functional)
    odd = keras.Sequential([keras.Input((3,)), keras.layers.LayerNormalization(name="ln")])
    with pytest.raises(ValueError, match="'ln' is a LayerNormalization"):
        sequential_spec(odd)
    spec = sequential_spec(digits_mlp())
    assert spec["input_shape"] == [64]
    assert spec["layers"][0] == {
        "class_name": "Dense",
        "config": {"units": 300, "activation": "relu", "use_bias": True, "name": "dense1"},
    }
    data = Split(*(np.zeros((4, 64), "float32"), np.zeros(4, "int64")) * 2)
    missing = "/nonexistent/python3"
    assert "FileNotFoundError" in tfmot_available(missing)
    with pytest.raises(TFMOTUnavailableError, match="TFCOMPRESS_TFMOT_PYTHON"):
        tfmot_prune(digits_mlp(), data, 0.5, epochs=1, end_step=1, frequency=1, python=missing)
    with pytest.raises(ValueError, match="representative_data"):
        tfmot_prune(digits_mlp(), data, 0.5, epochs=1, end_step=1, frequency=1, exports=("int8",))


def test_method_levels_descriptions_and_workloads():
    for name in METHODS:
        method = get_method(name)
        assert len(method.levels) >= 4 and len(method.quick_levels) == 2, name
        assert set(method.quick_levels) <= set(method.levels), name
        assert method.finetunes and method.description, name
    assert get_method("qat").levels == ("int8", "int4", "int3", "int2")
    # The levels of the one-shot sparsegpt_nm (methods/oneshot.py), so the two compare.
    assert get_method("n_m_sparsity").levels == ("2:4", "4:8", "1:4", "2:8")
    for name in ("gradual_magnitude", "rigl", "snip", "distill_magnitude"):
        levels = get_method(name).levels
        assert levels == tuple(sorted(levels)) == get_method("magnitude_layer").levels
    applies = {
        w.name: {m for m in METHODS if get_method(m).applies(w)} for w in list_workloads(tiny=True)
    }
    assert applies["digits_cnn"] == applies["lenet_300_100"] == set(METHODS)
    assert applies["mobilenet_digits"] == set(METHODS) - {"tfmot_magnitude"}
    assert applies["byte_lm"] == set(METHODS) - {"tfmot_magnitude", "binarize"}
    assert applies["mobilenetv2_035"] == set()


def test_qat_files_export_with_their_learned_ranges_not_calibration(tmp_path):
    # A fully quantization-aware model needs no calibration data: its ranges were learned.
    from tfcompress.bench.metrics import export_arm
    from tfcompress.quantization.quantize_model import quantize_model

    class Stub:
        calls = 0

        def data(self):
            return Split(*(np.ones((4, 64), "float32"), np.zeros(4, "int64")) * 2)

        def calibration(self, count, seed=0):
            Stub.calls += 1
            return np.ones((count, 64), "float32")

    keras.utils.set_random_seed(0)
    qat = quantize_model(digits_mlp(), "int8")
    qat.predict(np.ones((2, 64), "float32"), verbose=0)
    assert export_arm(qat, tmp_path / "qat.tflite", "int8", Stub())["verified"]
    assert Stub.calls == 0
    export_arm(digits_mlp(), tmp_path / "ptq.tflite", "int8", Stub())
    assert Stub.calls == 1
    # ... unless QAT left layers float (the method says so): those need calibrated ranges
    export_arm(qat, tmp_path / "qat2.tflite", "int8", Stub(), calibrate=True)
    assert Stub.calls == 2


def test_methods_leave_the_trained_model_unchanged():
    from tfcompress.bench.api import MethodRun

    workload = get_workload("lenet_300_100", tiny=True)
    for name in METHODS:
        if name == "tfmot_magnitude":  # reads get_weights() only, in another process
            continue
        method = get_method(name)
        model = workload.train(0)
        before = [w.copy() for w in model.get_weights()]
        result = method.fn(model, MethodRun(workload, method.levels[-1], 0))
        assert result.model is not model, name
        for old, new in zip(before, model.get_weights()):
            np.testing.assert_array_equal(old, new, err_msg=name)
        assert all(getattr(v, "constraint", None) is None for v in model.weights), name


def test_heads_ffn_shrink_removes_heads_and_ffn_neurons_of_the_language_model(tmp_path):
    method = get_method("heads_ffn_shrink")
    assert len(method.levels) >= 4 and method.applies_to == ("language_model",)
    document = run_suite(
        ["byte_lm"], ["heads_ffn_shrink"], tiny=True, latency=False, folder=tmp_path,
        verbose=0, log=lambda text: None,
    )  # fmt: skip
    (entry,) = document["workloads"]
    (arm,) = entry["arms"]
    (run,) = arm["runs"]
    assert run["error"] is None, run.get("traceback")
    assert arm["level"] == 0.25 and "heads kept: block0_attn 3" in run["notes"]
    # a quarter of the heads and of the FFN neurons: fewer parameters and MACs for real
    assert run["params"] < 0.9 * entry["dense"]["params"]
    assert run["macs"] < entry["dense"]["runs"][0]["macs"]
    assert math.isfinite(run["quality"]["bits_per_byte"]) and run["verified"]


def test_measured_once_is_shared_by_every_build_of_one_starting_model():
    from tfcompress.bench.methods.common import copy_model, measured_once

    workload = get_workload("mobilenet_digits", tiny=True)
    calls = []

    def compute():
        calls.append(1)
        return len(calls)

    first, second = workload.build(), workload.build()  # unnamed inputs get new names
    assert first.layers[0].name != second.layers[0].name
    second.set_weights(first.get_weights())
    assert measured_once("probe/a", first, compute) == (1, False)
    assert measured_once("probe/a", copy_model(second), compute) == (1, True)
    other = workload.build()  # other weights: measured again, unless weights do not matter
    assert measured_once("probe/a", other, compute) == (2, False)
    assert measured_once("probe/b", other, compute, weights=False) == (3, False)
    assert measured_once("probe/b", first, compute, weights=False) == (3, True)
