"""tfc.allocate.sparsity: channel fractions for a latency target (SPDY), on tiny models.

Latencies come from an injected timer that counts multiply-accumulates (deterministic,
no timing thresholds anywhere); one smoke test runs the real LiteRT timer.
"""

import importlib
import json

import keras
import numpy as np
import pytest

from tfcompress.allocation.channel_costs import ChannelGraph, latency_tables
from tfcompress.allocation.channel_plan import SparsityPlan, prune_channels
from tfcompress.allocation.latency import LatencyCache, LiteRTTimer, machine_key
from tfcompress.allocation.sparsity import sparsity
from tfcompress.allocation.spdy import search
from tfcompress.pruning.channels import channel_prunable_layers
from tfcompress.pruning.shrink import shrink_model

OVERHEAD = 1e-6


def _macs(model):
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            total += np.prod(layer.output.shape[1:]) * np.prod(layer.kernel.shape[:2])
        elif isinstance(layer, keras.layers.Conv2D):
            total += np.prod(layer.output.shape[1:]) * np.prod(layer.kernel.shape[:-1])
        elif isinstance(layer, keras.layers.Dense):
            total += np.prod(layer.output.shape[1:]) * layer.kernel.shape[0]
    return int(total)


class MacTimer:
    """Seconds = a fixed invoke overhead + 1 ns per multiply-accumulate; records every model."""

    cache_name = "fake-macs"

    def __init__(self):
        self.models = []

    def __call__(self, models):
        self.models.extend(models)
        return [OVERHEAD + 1e-9 * _macs(m) for m in models]

    def probes(self):
        return [m.name for m in self.models if m.name.startswith("latency_probe")]


def small_cnn():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c2"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(16, activation="relu", name="d1"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="small_cnn",
    )


def small_block():
    """Stem, one inverted residual block (expand, depthwise, project) and a classifier."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    h = keras.layers.Conv2D(24, 1, name="expand")(x)
    h = keras.layers.BatchNormalization(name="expand_bn")(h)
    h = keras.layers.ReLU(6.0, name="expand_relu")(h)
    h = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(h)
    h = keras.layers.BatchNormalization(name="dw_bn")(h)
    h = keras.layers.ReLU(6.0, name="dw_relu")(h)
    h = keras.layers.Conv2D(16, 1, name="project")(h)
    h = keras.layers.BatchNormalization(name="project_bn")(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    outputs = keras.layers.Dense(10, name="logits")(h)
    return keras.Model(inputs, outputs, name="small_block")


def _inputs(model, n=64, seed=0):
    shape = (n, *model.input_shape[1:])
    return np.random.default_rng(seed).random(shape).astype("float32")


def _plan(model, tmp_path, timer=None, **kwargs):
    kwargs.setdefault("search_steps", 10)
    kwargs.setdefault("verbose", 0)
    return sparsity(
        model, _inputs(model), timer=timer or MacTimer(), cache_dir=tmp_path / "cache", **kwargs
    )


def _widths(model):
    return {
        layer.name: int(layer.kernel.shape[-1])
        for layer in model.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
        and not isinstance(layer, keras.layers.DepthwiseConv2D)
    }


def test_plan_lists_every_prunable_layer_within_the_budget_and_prints(tmp_path):
    model = small_cnn()
    plan = _plan(model, tmp_path, target_latency=0.5, verbose=1)
    assert isinstance(plan, SparsityPlan)
    assert [c.layer for c in plan.layers] == channel_prunable_layers(model) == ["c1", "c2", "d1"]
    for choice in plan.layers:
        assert choice.choice in choice.options
        assert len(choice.options) == len(choice.option_costs) == len(choice.option_errors)
        assert choice.options[0] == 0.0 and choice.option_errors[0] == 0.0
        assert plan.pruned[choice.layer] == round(choice.choice * plan.channels[choice.layer])
    dense = OVERHEAD + 1e-9 * _macs(model)
    assert plan.dense_cost == pytest.approx(dense * 1e3)
    assert plan.budget == pytest.approx(0.5 * dense * 1e3)
    # The DP's prediction stays within the budget it was given (1e-4 rounding per layer).
    first = plan.measured[0]
    assert first["stage"] == "dp" and first["budget"] == 0.5
    assert first["predicted"] <= 0.5 + 3e-4
    assert plan.measured_latency <= 0.5 + 0.05
    text = str(plan)
    for piece in (
        "SparsityPlan: 3 layers",
        "channel fraction",
        "latency (ms)",
        "output error",
        "c1",
        "c2",
        "d1",
        "dp round 0",
        "measured: ",
        "x dense",
    ):
        assert piece in text
    again = SparsityPlan.from_dict(json.loads(plan.to_json()))
    assert again.pruned == plan.pruned and again.choices == plan.choices
    assert again.measured_latency == plan.measured_latency


def test_apply_gives_the_planned_widths_and_the_measured_latency(tmp_path):
    model = small_cnn()
    timer = MacTimer()
    plan = _plan(model, tmp_path, timer=timer, target_latency=0.4)
    small = plan.apply(model)
    widths = _widths(small)
    for name, channels in plan.channels.items():
        assert widths[name] == channels - plan.pruned[name]
    assert sum(plan.pruned.values()) > 0
    # The plan's measured latency is the shrunk model's, by the same timer.
    ratio = (OVERHEAD + 1e-9 * _macs(small)) / (OVERHEAD + 1e-9 * _macs(model))
    assert plan.measured_latency == pytest.approx(ratio)
    assert ratio <= 0.4 + 0.05
    # Shrinking removed exactly the zeroed channels: same outputs as the masked copy.
    x = _inputs(model, 16, seed=3)
    masked = prune_channels(model, plan.pruned)
    np.testing.assert_allclose(small.predict(x, verbose=0), masked.predict(x, verbose=0), atol=1e-5)
    assert _widths(model)["c2"] == 16  # the original is unchanged


def test_depthwise_block_is_timed_with_its_followers_and_shrinks_together(tmp_path):
    model = small_block()
    timer = MacTimer()
    plan = _plan(model, tmp_path, timer=timer, target_latency=0.6, tolerance=0.02)
    assert sorted(plan.channels) == ["expand", "project", "stem"]
    probed = {
        type(layer).__name__
        for m in timer.models
        if m.name == "latency_probe_expand"
        for layer in m.layers
    }
    assert {"Conv2D", "BatchNormalization", "DepthwiseConv2D", "ReLU"} <= probed
    small = plan.apply(model)
    kept = plan.channels["expand"] - plan.pruned["expand"]
    assert small.get_layer("dw").kernel.shape[-2] == kept
    assert small.get_layer("dw_bn").gamma.shape[0] == kept
    assert small.get_layer("project").kernel.shape[-2] == kept
    assert abs(plan.measured_latency - 0.6) <= 0.02 or plan.measured_latency < 0.6


def test_tables_are_exact_at_their_reference(tmp_path):
    # Around a reference choice, the tables predict that choice's latency exactly (the
    # coupled input widths are measured at the reference), here with an additive timer.
    model = small_block()
    graph = ChannelGraph(model, channel_prunable_layers(model))
    kept = {"stem": [8, 6, 4], "expand": [24, 12, 6], "project": [16, 8]}
    reference = {"stem": 6, "expand": 12, "project": 8}
    tables = latency_tables(graph, kept, reference, MacTimer(), None)
    choices = [kept[name].index(reference[name]) for name in tables.layers]
    pruned = {name: graph.channels(name) - reference[name] for name in tables.layers}
    small = shrink_model(prune_channels(model, pruned))
    assert tables.predict(choices) == pytest.approx(OVERHEAD + 1e-9 * _macs(small), rel=1e-9)
    assert not tables.fixed_clamped
    # At the dense end, the dense model's own latency.
    dense = latency_tables(graph, kept, {n: k[0] for n, k in kept.items()}, MacTimer(), None)
    assert dense.predict([0, 0, 0]) == pytest.approx(dense.dense, rel=1e-9)


def test_cache_is_written_reused_and_keyed_by_machine(tmp_path):
    model = small_cnn()
    first = MacTimer()
    plan = _plan(model, tmp_path, timer=first, search_steps=0)
    assert first.probes()
    files = list((tmp_path / "cache").glob("*.json"))
    assert len(files) == 1
    stored = json.loads(files[0].read_text())
    assert stored["machine"]["threads"] == 1 and stored["machine"]["timer"] == "fake-macs"
    assert len(stored["entries"]) >= len(first.probes())
    # A second call measures no layer again: only the shrunk-vs-dense checks (2 models each).
    second = MacTimer()
    again = _plan(model, tmp_path, timer=second, search_steps=0)
    assert second.probes() == []
    assert len(second.models) == 2 * len(again.measured)
    assert again.pruned == plan.pruned
    # Another machine (here: another thread count) gets its own file and measures anew.
    third = MacTimer()
    _plan(model, tmp_path, timer=third, search_steps=0, num_threads=2)
    assert third.probes() and len(list((tmp_path / "cache").glob("*.json"))) == 2


def test_machine_key_reads_the_cpu_and_separates_files(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse4_2 avx2 "
        "fma hypervisor avx512f\n"
    )
    key = machine_key(4, info)
    assert key["cpu"] == "Test CPU 9000" and key["threads"] == 4
    assert key["isa"] == ["avx2", "avx512f", "fma", "sse4_2"]
    one = LatencyCache(tmp_path, key)
    one.update({"probe": 1.5e-5})
    other = LatencyCache(tmp_path, {**key, "cpu": "Other CPU"})
    assert other.path != one.path and other.entries == {}
    assert LatencyCache(tmp_path, key).entries == {"probe": 1.5e-5}


def test_corrupt_cache_is_ignored_with_a_warning(tmp_path):
    model = small_cnn()
    _plan(model, tmp_path, search_steps=0)
    (path,) = (tmp_path / "cache").glob("*.json")
    path.write_text('{"format": 1, "machine": {"cpu": "trunc')
    timer = MacTimer()
    with pytest.warns(RuntimeWarning, match="unreadable"):
        plan = _plan(model, tmp_path, timer=timer, search_steps=0)
    assert timer.probes()  # measured again
    assert json.loads(path.read_text())["entries"]  # and written back whole
    assert plan.pruned


def test_search_never_returns_a_worse_loss_than_the_dp():
    # Three layers, options (dense, half, most) with measured single-layer errors that
    # mislead: pruning layers 0 and 2 together really costs much more than their sum, and
    # the DP's choice (layer 0 at half, layer 2 at most) does exactly that.
    costs = [[10, 5, 2], [10, 5, 2], [10, 5, 2]]
    errors = [[0.0, 1.0, 3.0], [0.0, 1.0, 3.0], [0.0, 2.0, 2.5]]

    def real(choices):
        single = sum(errors[layer][k] for layer, k in enumerate(choices))
        return single + (10.0 if choices[0] > 0 and choices[2] > 0 else 0.0)

    result = search(costs, errors, 17, real, steps=60, seed=0)
    assert result.dp_choices == [1, 0, 2] and result.dp_loss == 13.5
    assert result.loss <= result.dp_loss
    assert result.loss < result.dp_loss  # here the search finds the interaction
    assert sum(c[k] for c, k in zip(costs, result.choices)) <= 17
    assert result.loss == min(
        real([a, b, c])
        for a in range(3)
        for b in range(3)
        for c in range(3)
        if costs[0][a] + costs[1][b] + costs[2][c] <= 17
    )
    assert search(costs, errors, 17, real, steps=60, seed=0).choices == result.choices
    plain = search(costs, errors, 17, real, steps=0)
    assert plain.choices == plain.dp_choices and plain.evaluations == 1


def test_search_in_the_plan_is_recorded_and_not_worse(tmp_path):
    plan = _plan(small_cnn(), tmp_path, target_latency=0.4, search_steps=15, seed=1)
    assert plan.search["steps"] == 15 and plan.search["evaluations"] >= 1
    assert plan.search["best_loss"] <= plan.search["dp_loss"]


def test_target_one_keeps_the_model_dense(tmp_path):
    plan = _plan(small_cnn(), tmp_path, target_latency=1.0)
    assert set(plan.pruned.values()) == {0} and plan.measured_latency == pytest.approx(1.0)
    assert plan.to_pruning() == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_latency": 1.2}, r"target_latency=1\.2 must be in \(0, 1\].*more than 1"),
        ({"target_latency": 0}, r"target_latency=0 must be in \(0, 1\]"),
        ({"fractions": ()}, r"fractions=\(\) is empty"),
        ({"fractions": (0.5, 1.0)}, r"fractions must lie in \[0, 1\)"),
        (
            {"structure": "unstructured"},
            r"structure must be one of \('channel',\), got "
            r"'unstructured'",
        ),
        ({"structure": "blocks"}, r"structure must be one of .* got 'blocks'"),
        ({"calibration_data": None}, r"calibration_data is None"),
        ({"calibration_data": np.zeros((0, 8, 8, 1), "float32")}, r"calibration_data is empty"),
        ({"calibration_data": np.zeros((4, 9, 9, 1), "float32")}, r"has shape \(4, 9, 9, 1\)"),
        ({"loss": "mse"}, r"must be a pair \(x, y\) when loss= is given"),
        ({"search_steps": -1}, r"search_steps must be an integer >= 0, got -1"),
        ({"tolerance": 0}, r"tolerance must be a positive fraction"),
    ],
)
def test_bad_arguments_raise_before_anything_is_measured(tmp_path, kwargs, message):
    model = small_cnn()
    data = kwargs.pop("calibration_data", _inputs(model))
    timer = MacTimer()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=message):
        sparsity(model, data, timer=timer, cache_dir=tmp_path / "cache", verbose=0, **kwargs)
    assert timer.models == [] and not (tmp_path / "cache").exists()
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_unreachable_target_names_the_smallest_fraction(tmp_path):
    model = small_cnn()
    with pytest.raises(ValueError, match=r"target_latency=0\.2 is unreachable") as raised:
        _plan(model, tmp_path, target_latency=0.2, fractions=(0.0, 0.25))
    smallest = float(str(raised.value).split("smallest predicted latency is ")[1].split(" ")[0])
    assert 0.2 < smallest < 1.0
    # Asking for just that much works.
    plan = _plan(
        model,
        tmp_path,
        target_latency=min(1.0, smallest + 0.002),
        fractions=(0.0, 0.25),
        search_steps=0,
    )
    assert all(p == round(0.25 * plan.channels[n]) for n, p in plan.pruned.items())


def test_model_without_prunable_layers_and_mismatched_apply(tmp_path):
    dense_only = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="no Dense/Conv layer whose output channels"):
        sparsity(
            dense_only, np.ones((8, 4), "float32"), timer=MacTimer(), verbose=0, cache_dir=tmp_path
        )
    plan = _plan(small_cnn(), tmp_path, search_steps=0)
    other = small_block()
    with pytest.raises(ValueError, match="layer 'c1' should have 8 output channels"):
        plan.apply(other)


def test_with_targets_the_error_is_the_loss_increase(tmp_path):
    model = small_cnn()
    x = _inputs(model)
    y = np.argmax(model.predict(x, verbose=0), axis=-1)  # the dense model's own labels
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    plan = sparsity(
        model,
        (x, y),
        0.5,
        loss=loss,
        timer=MacTimer(),
        cache_dir=tmp_path,
        search_steps=0,
        verbose=0,
    )
    assert "error: loss increase on 64 calibration examples" in " ".join(plan.notes)
    assert plan.error_name == "loss increase"
    worst = [c.option_errors[-1] for c in plan.layers]
    assert all(e > 0 for e in worst)  # pruning 90% of any layer hurts its own labels


def test_to_pruning_callbacks_on_disjoint_layers_reach_the_plan_in_one_fit():
    model = small_cnn()
    plan = SparsityPlan(
        layers=[],
        budget=0.0,
        fixed_cost=0.0,
        dense_cost=1.0,
        cost_name="latency",
        cost_unit="ms",
        choice_name="channel fraction",
        error_name="loss increase",
        channels={"c1": 8, "c2": 16, "d1": 16},
        pruned={"c1": 4, "c2": 4, "d1": 8},
    )
    callbacks = plan.to_pruning(begin_step=0, end_step=4, frequency=1)
    assert [(c.target_sparsity, c.layers) for c in callbacks] == [
        (0.25, ["c2"]),
        (0.5, ["c1", "d1"]),
    ]
    x = _inputs(model, 64)
    y = np.random.default_rng(0).integers(0, 10, 64)
    model.compile(
        keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=callbacks)
    assert history.history["sparsity/c2"][-1] == 0.25
    assert history.history["sparsity/d1"][-1] == 0.5
    for name, pruned in plan.pruned.items():
        kernel = model.get_layer(name).kernel.numpy()
        zero = np.all(kernel.reshape(-1, kernel.shape[-1]) == 0, axis=0)
        assert zero.sum() == pruned
    small = shrink_model(model)
    assert {n: w for n, w in _widths(small).items() if n in plan.channels} == {
        "c1": 4,
        "c2": 12,
        "d1": 8,
    }
    with pytest.raises(ValueError, match=r"to_pruning sets \['granularity'\] itself"):
        plan.to_pruning(granularity="unstructured")


def test_the_litert_timer_times_real_files():
    # A smoke test of the real path: positive, finite seconds (no thresholds).
    models = [
        keras.Sequential([keras.Input((8, 8, 4)), keras.layers.Conv2D(c, 3)]) for c in (2, 16)
    ]
    seconds = LiteRTTimer(rounds=2, min_block_s=1e-4)(models)
    assert len(seconds) == 2 and all(np.isfinite(s) and s > 0 for s in seconds)


def test_inputs_of_unknown_size_are_refused_before_measuring(tmp_path):
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(4, 3, name="c1")(inputs)
    x = keras.layers.Conv2D(4, 3, name="c2")(x)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, outputs)
    timer = MacTimer()
    with pytest.raises(ValueError, match=r"every dimension but the batch must be fixed"):
        sparsity(
            model, np.ones((4, 8, 8, 1), "float32"), timer=timer, verbose=0, cache_dir=tmp_path
        )
    assert timer.models == []


class WholeModelSlower(MacTimer):
    """Whole models take 1.5x their layers' time: the tables mispredict the ratio."""

    cache_name = "fake-slow-whole"

    def __call__(self, models):
        seconds = super().__call__(models)
        return [
            s if m.name.startswith(("latency_probe", "invoke_overhead")) else 1.5 * s
            for m, s in zip(models, seconds)
        ]


def test_a_missed_target_is_measured_again_and_rescaled(tmp_path):
    timer = WholeModelSlower()
    plan = _plan(
        small_block(), tmp_path, timer=timer, target_latency=0.5, tolerance=0.01, search_steps=0
    )
    rounds = [r for r in plan.measured if r["stage"] == "dp"]
    assert len(rounds) >= 2
    assert abs(rounds[0]["measured"] - 0.5) > 0.01  # the first choice misses
    assert rounds[1]["budget"] != 0.5  # so the budget is rescaled ...
    # ... on tables measured again around the first choice (new probe widths).
    # Round 0 times expand at 8 input channels, or at 24 outputs; then both change together.
    pairs = {
        (m.input_shape[-1], m.layers[1].filters)
        for m in timer.models
        if m.name == "latency_probe_expand"
    }
    assert any(width_in != 8 and width_out != 24 for width_in, width_out in pairs)
    # The plan is the round that meets the target with the most latency left for accuracy.
    meeting = [r["measured"] for r in rounds if r["measured"] <= 0.5 + 0.01]
    assert plan.measured_latency == max(meeting)


def test_errors_from_an_earlier_plan_are_reused_not_measured(tmp_path, monkeypatch):
    model = small_cnn()
    first = _plan(model, tmp_path, target_latency=0.6, seed=3)
    fresh = _plan(model, tmp_path, target_latency=0.4, seed=3)
    module = importlib.import_module("tfcompress.allocation.sparsity")  # the package's
    # attribute of that name is the function

    def no_measuring(*args, **kwargs):
        raise AssertionError("errors were measured again")

    monkeypatch.setattr(module, "_layer_errors", no_measuring)
    reused = _plan(model, tmp_path, target_latency=0.4, seed=3, errors_from=first)
    assert [c.option_errors for c in reused.layers] == [c.option_errors for c in first.layers]
    assert [c.option_errors for c in reused.layers] == [c.option_errors for c in fresh.layers]
    assert reused.pruned == fresh.pruned and reused.measured_latency == fresh.measured_latency


def test_errors_from_a_mismatched_plan_raise_before_measuring(tmp_path):
    model = small_cnn()
    other = _plan(model, tmp_path, target_latency=0.6, fractions=(0.0, 0.5))
    timer = MacTimer()
    with pytest.raises(ValueError, match=r"errors_from: layer 'c1' has options \(0\.0, 0\.5\)"):
        _plan(model, tmp_path, timer=timer, target_latency=0.5, errors_from=other)
    with pytest.raises(ValueError, match="errors_from must be a SparsityPlan; received dict"):
        _plan(model, tmp_path, timer=timer, target_latency=0.5, errors_from={})
    assert timer.models == []
