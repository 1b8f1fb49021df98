"""The benchmark suite's core: interfaces, runner, metrics, report, CLI (tiny configuration)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from tfcompress import UnreadableFileError
from tfcompress.bench import Compressed, get_method, list_methods, register_method
from tfcompress.bench.api import _METHODS
from tfcompress.bench.metrics import model_stats
from tfcompress.bench.report import (
    load_document,
    report_markdown,
    summary_markdown,
    write_report,
)
from tfcompress.bench.suite import SCHEMA, run_suite, sanity_checks


@pytest.fixture(scope="module")
def tiny_document(tmp_path_factory):
    folder = tmp_path_factory.mktemp("suite")
    document = run_suite(
        ["digits_cnn"],
        ["random", "magnitude_layer", "magnitude_layer_no_ft", "tflite_ptq"],
        tiny=True,
        folder=folder / "files",
        verbose=0,
        log=lambda text: None,
    )
    return document, folder


def test_tiny_run_measures_every_arm(tiny_document):
    document, _ = tiny_document
    assert document["schema"] == SCHEMA and document["configuration"] == "tiny"
    (entry,) = document["workloads"]
    dense = entry["dense"]
    assert dense["params"] == 159626 and dense["macs"] == 2444544
    assert 0.5 < dense["quality_mean"] <= 1.0
    arms = {(a["method"], a["level"]): a for a in entry["arms"]}
    assert set(arms) == {
        ("random", 0.5),
        ("magnitude_layer", 0.5),
        ("magnitude_layer_no_ft", 0.5),
        ("tflite_ptq", "float16"),
    }
    for arm in arms.values():
        assert arm["errors"] == [], arm["errors"]
        assert np.isfinite(arm["quality_mean"]) and arm["verified"]
        assert arm["tflite_bytes"] > 0 and arm["gzip_bytes"] > 0
        assert arm["latency"]["min_ms"] > 0 and arm["latency"]["ratio_min"] > 0
    pruned = arms[("magnitude_layer", 0.5)]
    # Half of every kernel is zero (biases are not pruned): non-zero params near half.
    assert 0.49 < pruned["nonzero_params"] / dense["params"] < 0.52
    assert pruned["effective_macs"] == pytest.approx(dense["macs"] / 2, rel=0.01)
    assert arms[("tflite_ptq", "float16")]["runs"][0]["quality_from"] == "tflite"
    assert arms[("tflite_ptq", "float16")]["tflite_bytes"] < 0.6 * dense["tflite_bytes"]


def test_report_json_and_plots_are_written(tiny_document):
    document, folder = tiny_document
    written = write_report(document, folder / "out")
    loaded = load_document(written["results"])
    assert loaded["workloads"][0]["name"] == "digits_cnn"
    text = written["report"].read_text()
    assert "| magnitude_layer | sparsity 0.5 | yes |" in text
    assert "## Sanity check" in text
    assert written["digits_cnn"].stat().st_size > 10_000  # a real PNG, not an empty figure
    summary = summary_markdown(loaded).splitlines()
    assert summary[0].startswith("| method | digits_cnn (") and len(summary) == 2 + 4
    assert [row.split(" | ")[0] for row in summary[2:]] == [
        "| random", "| magnitude_layer", "| magnitude_layer_no_ft", "| tflite_ptq"
    ]  # fmt: skip


def _fake_document(higher_is_better: bool, random_q: float, magnitude_q: float) -> dict:
    def arm(method, q):
        return {
            "method": method,
            "level": 0.5,
            "level_name": "sparsity",
            "finetunes": True,
            "quality_mean": q,
            "quality_std": 0.0,
            "runs": [],
            "errors": [],
        }

    return {
        "workloads": [
            {
                "name": "w",
                "higher_is_better": higher_is_better,
                "metric": "bits_per_byte",
                "arms": [arm("random", random_q), arm("magnitude_layer", magnitude_q)],
            }
        ]
    }


@pytest.mark.parametrize(
    "higher, random_q, magnitude_q, holds",
    [
        (True, 0.80, 0.90, True),
        (True, 0.90, 0.80, False),
        (False, 3.0, 2.2, True),
        (False, 2.2, 3.0, False),
    ],
)
def test_sanity_check_respects_the_metric_direction(higher, random_q, magnitude_q, holds):
    (check,) = sanity_checks(_fake_document(higher, random_q, magnitude_q))
    assert check["holds"] is holds


def test_sanity_check_skips_levels_where_magnitude_is_no_better_than_context_free():
    # bits per byte: 4.5 is what the byte frequencies alone give
    document = _fake_document(False, 5.4, 5.8)
    second = {**document["workloads"][0]["arms"][0], "level": 0.5}
    entry = document["workloads"][0]
    entry["context_free"] = 4.5
    entry["arms"] = [
        {**second, "method": "random", "level": 0.5, "quality_mean": 4.1},
        {**second, "method": "magnitude_layer", "level": 0.5, "quality_mean": 2.2},
        {**second, "method": "random", "level": 0.9, "quality_mean": 5.4},
        {**second, "method": "magnitude_layer", "level": 0.9, "quality_mean": 5.8},
    ]
    (check,) = sanity_checks(document)
    assert check["holds"] is True
    assert [row.get("collapsed", False) for row in check["levels"]] == [False, True]
    assert check["levels"][1]["holds"] is None
    # magnitude worse than random where it is not collapsed: fails
    entry["arms"][1]["quality_mean"] = 4.3
    assert sanity_checks(document)[0]["holds"] is False
    # every level collapsed: nothing shows that magnitude beats random
    entry["arms"][1]["quality_mean"] = 4.6
    assert sanity_checks(document)[0]["holds"] is False
    # accuracy: the majority class's 10% is the floor
    accuracy = _fake_document(True, 0.05, 0.09)
    accuracy["workloads"][0]["context_free"] = 0.1
    assert sanity_checks(accuracy)[0]["holds"] is False
    assert sanity_checks(accuracy)[0]["levels"][0]["collapsed"] is True


def test_context_free_quality_of_the_workloads():
    from tfcompress.bench.workloads import get_workload

    digits = get_workload("digits_cnn", tiny=True)
    assert 0.08 < digits.context_free_quality() < 0.12  # ten balanced classes
    lm = get_workload("byte_lm", tiny=True)
    assert 4.0 < lm.context_free_quality() < 5.5  # byte frequencies of Python source


def test_registering_a_method_takes_a_function():
    name = "test_only_identity"
    try:

        @register_method(
            name, family="test", levels=(1, 2, 3, 4), level_name="n", applies_to=("classification",)
        )
        def identity(model, run):
            """Returns the model unchanged."""
            return Compressed(model)

        method = get_method(name)
        assert method.description == "Returns the model unchanged."
        assert method.quick_levels == (1, 2, 3, 4)
        with pytest.raises(ValueError, match="already registered"):
            register_method(
                name, family="test", levels=(1,), level_name="n", applies_to=("classification",)
            )
    finally:
        _METHODS.pop(name, None)


def test_bad_names_and_arguments_are_rejected_before_running():
    with pytest.raises(ValueError, match="unknown workloads \\['nope'\\]"):
        run_suite(["nope"], tiny=True)
    with pytest.raises(ValueError, match="unknown methods \\['nope'\\]"):
        run_suite(["digits_cnn"], ["nope"], tiny=True)
    with pytest.raises(ValueError, match="seeds must hold at least one seed"):
        run_suite(["digits_cnn"], ["random"], tiny=True, seeds=[])
    with pytest.raises(ValueError, match="applies_to must hold tasks"):
        register_method("x", family="t", levels=(1,), level_name="n", applies_to=("video",))
    with pytest.raises(ValueError, match="unknown benchmark method 'nope'"):
        get_method("nope")


def test_every_method_has_enough_levels_and_a_description():
    for method in list_methods():
        assert method.description, method.name
        if method.level_name in ("sparsity", "bits", "clusters", "parameter ratio"):
            assert len(method.levels) >= 4, method.name


def test_load_document_refuses_other_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"rows": []}))
    with pytest.raises(UnreadableFileError, match=r"not a tfcompress\.bench\.suite"):
        load_document(path)
    path.write_text("{not json")
    with pytest.raises(UnreadableFileError, match="not JSON"):
        load_document(path)


def test_model_stats_counts_zeros_and_scales_macs():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, use_bias=False)])
    model.set_weights([np.array([[1, 0, 0], [0, 2, 0], [0, 0, 0], [1, 1, 1]], np.float32)])
    stats = model_stats(model)
    assert stats["params"] == 12 and stats["nonzero_params"] == 5
    assert stats["macs"] == 12 and stats["effective_macs"] == 5


def test_report_markdown_marks_failed_arms():
    document = {
        "configuration": "tiny",
        "seeds": [0],
        "created": "now",
        "seconds": 1.0,
        "machine": {},
        "sanity": [],
        "workloads": [
            {
                "name": "w",
                "description": "d",
                "metric": "accuracy",
                "higher_is_better": True,
                "dense": {
                    "runs": [{}],
                    "quality_mean": 0.9,
                    "quality_std": 0.0,
                    "params": 10,
                    "macs": 10,
                    "tflite_bytes": 100,
                    "gzip_bytes": 90,
                },
                "arms": [
                    {
                        "method": "m",
                        "level": 1,
                        "level_name": "n",
                        "finetunes": False,
                        "quality_mean": None,
                        "runs": [{"error": "ValueError: boom"}],
                        "errors": ["ValueError: boom"],
                    }
                ],
            }
        ],
    }
    text = report_markdown(document)
    assert "| m | n 1 | no | failed |" in text and "ValueError: boom" in text
