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
