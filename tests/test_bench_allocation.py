"""The budgeted methods in the suite's harness: mixed precision at a file-size budget,
SPDY channel allocation and its uniform baseline at a latency budget (tiny budgets)."""

import re

import pytest

from tfcompress.bench.catalog import get_method
from tfcompress.bench.suite import run_suite

METHODS = ["mixed_bits", "gptq", "spdy_channel", "uniform_channel_latency"]


@pytest.fixture(scope="module")
def arms(tmp_path_factory):
    document = run_suite(
        ["digits_cnn"],
        METHODS,
        tiny=True,
        latency=False,
        folder=tmp_path_factory.mktemp("allocation"),
        verbose=0,
        log=lambda text: None,
    )
    (entry,) = document["workloads"]
    return entry["dense"], {a["method"]: a for a in entry["arms"]}


def test_budgeted_methods_run_and_say_what_they_chose(arms):
    dense, found = arms
    assert set(found) == set(METHODS)
    for name, arm in found.items():
        assert arm["errors"] == [], (name, arm["errors"])
        assert arm["level"] == get_method(name).levels[0]
        assert 0.5 < arm["quality_mean"] <= 1.0, name
    assert "layers at 2/4/8 bits" in found["mixed_bits"]["runs"][0]["notes"]
    for name in ("spdy_channel", "uniform_channel_latency"):
        assert re.search(r"measured \d\.\d{3} x dense", found[name]["runs"][0]["notes"]), name
        # channels are removed for real: fewer parameters and MACs than the dense model
        assert found[name]["params"] < dense["params"]
        assert found[name]["macs"] < dense["macs"]


def test_mixed_bits_stays_within_its_file_budget(arms):
    _, found = arms
    notes = found["mixed_bits"]["runs"][0]["notes"]
    budget = int(re.search(r"of a ([\d,]+) B budget", notes).group(1).replace(",", ""))
    four = int(re.search(r"uniform 4-bit file ([\d,]+) B", notes).group(1).replace(",", ""))
    assert budget == int(get_method("mixed_bits").levels[0] * four)
    assert found["mixed_bits"]["tflite_bytes"] <= budget + 64  # flatbuffer padding
    # 1.5 x the 4-bit file is less than the 8-bit file of the same model
    assert found["mixed_bits"]["tflite_bytes"] < found["gptq"]["tflite_bytes"]


def test_allocation_methods_are_registered_with_their_levels():
    assert get_method("mixed_bits").levels == (1.5, 1.25, 1.0, 0.9)
    assert get_method("spdy_channel").levels == get_method("uniform_channel_latency").levels
    assert not get_method("mixed_bits").finetunes and get_method("spdy_channel").finetunes


def test_readme_allocation_numbers_come_from_the_committed_run():
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    document = json.loads((root / "docs/bench/allocation/results.json").read_text())
    assert document["configuration"] == "quick" and document["seeds"] == [0, 1, 2]
    arms = {
        (w["name"], a["method"], a["level"]): a for w in document["workloads"] for a in w["arms"]
    }
    assert all(a["errors"] == [] for a in arms.values())
    readme = " ".join((root / "README.md").read_text().split())

    def quoted(workload, method, level, scale, digits):
        arm = arms[(workload, method, level)]
        mean, std = arm["quality_mean"] * scale, arm["quality_std"] * scale
        return f"{mean:.{digits}f} +- {std:.{digits}f}"

    claims = [
        quoted("byte_lm", "mixed_bits", 1.0, 1, 3),
        quoted("byte_lm", "gptq", 4, 1, 3),
        quoted("digits_cnn", "mixed_bits", 1.0, 100, 1),
        quoted("mobilenet_digits", "spdy_channel", 0.6, 100, 1),
        quoted("mobilenet_digits", "uniform_channel_latency", 0.6, 100, 1),
        quoted("digits_cnn", "spdy_channel", 0.6, 100, 1),
    ]
    for claim in claims:
        assert claim in readme, claim
    # the budgeted methods beat their baselines in this run (means), at the same bytes
    lm_mixed, lm_gptq = arms[("byte_lm", "mixed_bits", 1.0)], arms[("byte_lm", "gptq", 4)]
    assert lm_mixed["quality_mean"] < lm_gptq["quality_mean"]
    assert lm_mixed["tflite_bytes"] <= lm_gptq["tflite_bytes"]
    for workload in ("digits_cnn", "mobilenet_digits"):
        spdy = arms[(workload, "spdy_channel", 0.6)]
        uniform = arms[(workload, "uniform_channel_latency", 0.6)]
        assert spdy["quality_mean"] > uniform["quality_mean"]


def test_mixed_bits_below_the_smallest_reachable_file_uses_the_smallest_plan():
    from tfcompress.bench.api import MethodRun
    from tfcompress.bench.workloads import get_workload

    workload = get_workload("lenet_300_100", tiny=True)
    model = workload.train(0)
    result = get_method("mixed_bits").fn(model, MethodRun(workload, 0.05, 0))
    match = re.search(r"the ([\d,]+) B budget is below the smallest file these widths reach "
                      r"\(([\d,]+) B\): that smallest plan is used", result.notes)  # fmt: skip
    assert match, result.notes
    budget, smallest = (int(g.replace(",", "")) for g in match.groups())
    assert budget < smallest
    assert "layers at 2/4/8 bits:" in result.notes and result.export == "int8"
