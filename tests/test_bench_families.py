"""The survey's remaining families in the suite's harness: structured matrices, transferred
and compact filters, CP; each lands at the parameter count nearest lowrank_svd's target."""

import re

import pytest

from tfcompress.bench.catalog import get_method
from tfcompress.bench.methods.lowrank import nearest_knob, param_target
from tfcompress.bench.suite import run_suite
from tfcompress.bench.workloads import get_workload

FAMILIES = [
    "transferred_conv",
    "lowrank_cp",
    "compact_separable",
    "compact_flattened",
    "compact_fire",
    "circulant_dense",
    "toeplitz_dense",
]


@pytest.fixture(scope="module")
def arms(tmp_path_factory):
    document = run_suite(
        ["digits_cnn"],
        [*FAMILIES, "lowrank_svd"],
        tiny=True,
        latency=False,
        folder=tmp_path_factory.mktemp("families"),
        verbose=0,
        log=lambda text: None,
    )
    (workload,) = document["workloads"]
    return workload, {arm["method"]: arm for arm in workload["arms"]}


def test_every_family_runs_exports_and_agrees(arms):
    _, found = arms
    for name in FAMILIES:
        arm = found[name]
        assert arm["errors"] == [], (name, arm["errors"])
        assert arm["verified"] and arm["max_abs_diff"] < 1e-3, name
        assert arm["quality_mean"] > 0.3, name  # far above chance (0.1) after the fine-tune


def test_families_land_near_the_parameter_target_of_lowrank_svd(arms):
    workload, found = arms
    dense = workload["dense"]["params"]
    target = found["lowrank_svd"]["params"]  # lowrank_svd reaches its own target
    for name in FAMILIES:
        notes = found[name]["runs"][0]["notes"]
        reached = int(re.search(r"([\d,]+) parameters", notes).group(1).replace(",", ""))
        quoted = int(re.search(r"target ([\d,]+)", notes).group(1).replace(",", ""))
        assert reached == found[name]["params"], name
        assert abs(quoted - target) <= 0.01 * dense, name
        assert found[name]["params"] < 0.75 * dense, name  # every family compresses at 0.5
    # the filter families reach the target within a few percent of the model
    for name in ("lowrank_cp", "compact_separable", "compact_fire", "transferred_conv"):
        assert abs(found[name]["params"] - target) < 0.03 * dense, name


def test_cp_and_compact_blocks_cut_macs_transferred_keeps_them(arms):
    workload, found = arms
    dense_macs = workload["dense"]["macs"]
    for name in ("lowrank_cp", "compact_separable", "compact_flattened", "compact_fire"):
        assert found[name]["macs"] < 0.5 * dense_macs, name
    # the transferred kernel is built from its base set: the file's convolution is full size
    assert found["transferred_conv"]["macs"] == dense_macs


def test_nearest_knob_and_target():
    assert nearest_knob({2: 110, 4: 90, 8: 70}, 95) == 4
    assert nearest_knob({2: 110, 4: 90}, 100) == 4  # a tie goes to the smaller model
    model = get_workload("digits_cnn", tiny=True).build()
    assert param_target(model, 1.0) == model.count_params()
    assert param_target(model, 0.5) < model.count_params()


def test_level_axes_match_lowrank_svd():
    reference = get_method("lowrank_svd")
    for name in FAMILIES:
        method = get_method(name)
        assert method.levels == reference.levels and method.level_name == reference.level_name
    assert get_method("circulant_dense").applies(get_workload("mobilenet_digits", tiny=True))
    assert not get_method("compact_fire").applies(get_workload("mobilenet_digits", tiny=True))


def test_readme_family_numbers_come_from_the_committed_run():
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    document = json.loads((root / "docs/bench/families/results.json").read_text())
    assert document["configuration"] == "full" and document["seeds"] == [0, 1, 2]
    arms = {
        (w["name"], a["method"], a["level"]): a for w in document["workloads"] for a in w["arms"]
    }
    assert all(a["errors"] == [] for a in arms.values())
    readme = " ".join((root / "README.md").read_text().split())
    quoted = [
        ("digits_cnn", "lowrank_svd", 0.5),
        ("digits_cnn", "compact_fire", 0.5),
        ("digits_cnn", "lowrank_cp", 0.5),
        ("digits_cnn", "compact_flattened", 0.5),
        ("digits_cnn", "compact_separable", 0.5),
        ("digits_cnn", "transferred_conv", 0.5),
        ("mobilenet_digits", "circulant_dense", 0.1),
        ("mobilenet_digits", "lowrank_svd", 0.1),
    ]
    for key in quoted:
        arm = arms[key]
        claim = f"{arm['quality_mean'] * 100:.1f} +- {arm['quality_std'] * 100:.1f}%"
        assert claim in readme, (key, claim)
    for key in (quoted[0], quoted[1], quoted[-2], quoted[-1]):
        assert f"{arms[key]['params']:,}" in readme, key
    # the claims the text makes in words
    fire, svd = arms[quoted[1]], arms[quoted[0]]
    assert fire["latency"]["ratio_median"] < 0.5 * svd["latency"]["ratio_median"]
    slow = [arms[("mobilenet_digits", "circulant_dense", lv)]["latency"]["ratio_median"]
            for lv in (0.5, 0.3, 0.2, 0.1)]  # fmt: skip
    assert min(slow) > 1.0
