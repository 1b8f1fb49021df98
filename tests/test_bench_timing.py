"""The shared timing harness: call order, statistics and ratios on a fake clock; no real timing."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from tfcompress.bench import timing as harness
from tfcompress.bench.timing import cpu_isa, time_arms


class FakeClock:
    """A clock that only moves when an arm says how long its work took."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _arms(clock, costs: dict[str, list[float]], log: list[str]):
    """Arms whose i-th call advances the fake clock by costs[name][i] and logs the call."""
    calls = {name: 0 for name in costs}

    def make(name):
        def arm():
            log.append(name)
            clock.now += costs[name][calls[name]]
            calls[name] += 1

        return arm

    return {name: make(name) for name in costs}


def test_round_robin_order_with_warmup_and_number():
    clock, log = FakeClock(), []
    arms = _arms(clock, {"a": [1.0] * 9, "b": [1.0] * 9, "c": [1.0] * 9}, log)
    time_arms(arms, rounds=3, number=2, warmup=1, clock=clock)
    # Warm-up arm by arm, then every round calls a, b, c in order, `number` calls in a row.
    assert log == ["a", "b", "c"] + ["a", "a", "b", "b", "c", "c"] * 3


def test_min_median_and_ratios_against_the_named_baseline():
    clock, log = FakeClock(), []
    costs = {
        "fast": [9.0, 1.0, 2.0, 3.0, 7.0],  # first call is the (untimed) warm-up
        "slow": [9.0, 4.0, 8.0, 6.0, 5.0],
    }
    timing = time_arms(_arms(clock, costs, log), baseline="slow", rounds=4, warmup=1, clock=clock)
    fast, slow = timing.arms["fast"], timing.arms["slow"]
    assert fast.samples == (1.0, 2.0, 3.0, 7.0)
    assert slow.samples == (4.0, 8.0, 6.0, 5.0)
    assert (fast.min, fast.median) == (1.0, 2.5)
    assert (slow.min, slow.median) == (4.0, 5.5)
    assert fast.ratio_min == pytest.approx(1.0 / 4.0)
    assert fast.ratio_median == pytest.approx(2.5 / 5.5)
    assert (slow.ratio_min, slow.ratio_median) == (1.0, 1.0)
    assert timing.ratio("slow", to="fast") == pytest.approx(4.0)
    assert timing.ratio("fast", stat="median") == pytest.approx(2.5 / 5.5)
    assert timing.baseline == "slow"
    assert timing.conditions["seconds"] == pytest.approx(sum(map(sum, costs.values())))


def test_baseline_defaults_to_the_first_arm():
    clock, log = FakeClock(), []
    timing = time_arms(
        _arms(clock, {"x": [2.0] * 3, "y": [6.0] * 3}, log), rounds=3, warmup=0, clock=clock
    )
    assert timing.baseline == "x"
    assert timing.arms["y"].ratio_min == pytest.approx(3.0)


def test_reduce_median_keeps_one_sample_per_round():
    clock, log = FakeClock(), []
    # Round 1: 1, 100 (an interruption), 2 -> median 2; round 2: 3, 4, 5 -> 4.
    costs = {"a": [1.0, 100.0, 2.0, 3.0, 4.0, 5.0]}
    timing = time_arms(
        _arms(clock, costs, log), rounds=2, number=3, warmup=0, reduce="median", clock=clock
    )
    assert timing.arms["a"].samples == (2.0, 4.0)
    assert timing.min("a") == 2.0 and timing.median("a") == 3.0


def test_reduce_mean_times_the_block_and_divides():
    clock, log = FakeClock(), []
    costs = {"a": [1.0, 2.0, 3.0, 10.0, 10.0, 10.0]}
    timing = time_arms(
        _arms(clock, costs, log), rounds=2, number=3, warmup=0, reduce="mean", clock=clock
    )
    assert timing.arms["a"].samples == (2.0, 10.0)


def test_self_timed_arms_record_what_they_return():
    returns = iter([[0.5, 0.25], 0.75, [0.125, 1.0], 2.0, [0.3, 0.2], 1.5])
    arms = {"fit": lambda: next(returns), "plain": lambda: next(returns)}
    clock = FakeClock()  # never advances: the wall time around the calls is not used
    timing = time_arms(arms, rounds=3, warmup=0, self_timed=True, clock=clock)
    assert timing.arms["fit"].samples == (0.5, 0.25, 0.125, 1.0, 0.3, 0.2)
    assert timing.arms["plain"].samples == (0.75, 2.0, 1.5)
    assert timing.min("fit") == 0.125
    assert timing.median("fit") == statistics.median([0.5, 0.25, 0.125, 1.0, 0.3, 0.2])
    assert timing.ratio("plain", to="fit") == pytest.approx(0.75 / 0.125)


@pytest.mark.parametrize("bad", [None, "fast", -1.0, math.nan, [], True])
def test_self_timed_arm_must_return_seconds(bad):
    with pytest.raises(ValueError, match="self-timed arm 'a' returned"):
        time_arms({"a": lambda: bad}, rounds=1, warmup=0, self_timed=True)


def test_result_is_json_able_and_records_conditions():
    clock, log = FakeClock(), []
    timing = time_arms(
        _arms(clock, {"a": [1.0] * 3, "b": [2.0] * 3}, log),
        rounds=2,
        clock=clock,
        conditions={"kernel_isa": "avx512"},
    )
    data = json.loads(json.dumps(timing.to_dict()))
    assert data["baseline"] == "a"
    assert data["arms"]["b"] == {
        "min_s": 2.0,
        "median_s": 2.0,
        "ratio_min": 2.0,
        "ratio_median": 2.0,
        "samples_s": [2.0, 2.0],
    }
    assert data["settings"]["rounds"] == 2 and data["settings"]["order"] == "round-robin"
    conditions = data["conditions"]
    assert conditions["kernel_isa"] == "avx512"
    assert len(conditions["load_average"]) == 3
    assert len(conditions["load_average_after"]) == 3
    assert conditions["cpu_count"] >= 1
    assert set(conditions["cpu"]) == {"model", "flags"}


def test_zero_baseline_gives_nan_ratios_not_an_error():
    timing = time_arms({"a": lambda: None, "b": lambda: None}, rounds=1, clock=lambda: 0.0)
    assert math.isnan(timing.arms["b"].ratio_min)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"arms": {}}, "arms is empty"),
        ({"arms": {"a": 3}}, "arm 'a' is int, expected a callable"),
        ({"baseline": "z"}, "baseline 'z' is not one of the arms"),
        ({"rounds": 0}, "rounds must be an integer >= 1, got 0"),
        ({"number": 1.5}, "number must be an integer >= 1, got 1.5"),
        ({"warmup": -1}, "warmup must be an integer >= 0, got -1"),
        ({"reduce": "max"}, "reduce must be one of"),
    ],
)
def test_bad_arguments_are_refused_before_any_call(kwargs, match):
    calls = []
    arguments = {"arms": {"a": lambda: calls.append(1)}, **kwargs}
    with pytest.raises(ValueError, match=match):
        time_arms(**arguments)
    assert calls == []


def test_ratio_rejects_unknown_names_and_stats():
    timing = time_arms({"a": lambda: None}, rounds=1, clock=FakeClock())
    with pytest.raises(KeyError, match="no arm named 'b'"):
        timing.ratio("b")
    with pytest.raises(ValueError, match="stat must be 'min' or 'median', got 'mean'"):
        timing.ratio("a", stat="mean")


def test_cpu_isa_reads_x86_and_arm_flags(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text(
        "processor\t: 0\nmodel name\t: Fake CPU @ 2GHz\n"
        "flags\t\t: fpu sse4_2 popcnt avx2 avx512f avx512_vnni avx512_vpopcntdq\n\n"
        "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n"
    )
    assert cpu_isa(x86) == {
        "model": "Fake CPU @ 2GHz",
        "flags": sorted(["sse4_2", "popcnt", "avx2", "avx512f", "avx512_vnni", "avx512_vpopcntdq"]),
    }
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp sve\nCPU part\t: 0xd0c\n")
    assert cpu_isa(arm) == {"model": None, "flags": ["asimd", "asimddp", "sve"]}
    assert cpu_isa(tmp_path / "missing")["flags"] is None


def test_module_imports_only_the_standard_library():
    # Benchmarks' tf_keras subprocesses load the harness by file path, without tfcompress.
    import ast
    import sys

    tree = ast.parse(Path(harness.__file__).read_text())
    roots = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert roots <= set(sys.stdlib_module_names) | {"__future__"}, roots


def test_loads_by_file_path_as_the_tf_keras_subprocesses_do():
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("timing_by_path", harness.__file__)
    module = sys.modules["timing_by_path"] = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        timing = module.time_arms(
            {"a": lambda: [0.5, 0.25], "b": lambda: 1.0}, rounds=2, warmup=0, self_timed=True
        )
    finally:
        del sys.modules["timing_by_path"]
    assert timing.min("a") == 0.25 and timing.ratio("b") == 4.0
