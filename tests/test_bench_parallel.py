"""The suite's smoke run in the test command: every workload, tiny budgets, two workers
(``tfcompress bench suite --tiny --jobs 2``), through the command line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tfcompress.bench.parallel import run_parallel
from tfcompress.bench.workloads import list_workloads

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, "-m", "tfcompress", "bench", "suite", "--tiny", "--jobs", "2",
        "--methods", "random", "magnitude_layer", "tflite_ptq", "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    return result, out


def test_every_workload_runs_on_two_workers_and_is_timed_afterwards(smoke):
    result, out = smoke
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "arm(s) had errors" not in result.stderr
    document = json.loads((out / "results.json").read_text())
    assert document["jobs"] == 2 and "failed_workloads" not in document
    names = [w.name for w in list_workloads(tiny=True)]
    assert [entry["name"] for entry in document["workloads"]] == names  # order kept
    for entry in document["workloads"]:
        assert entry["dense"]["latency"]["min_ms"] > 0, entry["name"]
        assert entry["arms"], entry["name"]
        for arm in entry["arms"]:
            assert arm["errors"] == [], (entry["name"], arm["method"], arm["errors"])
            assert arm["tflite_bytes"] > 0 and arm["latency"]["min_ms"] > 0
            if entry["metric"] != "none":
                assert math.isfinite(arm["quality_mean"]), (entry["name"], arm["method"])
    language_model = next(w for w in document["workloads"] if w["name"] == "byte_lm")
    assert language_model["anchor"]["gzip9_bits_per_byte"] == pytest.approx(1.907, abs=0.01)
    for name in names:
        assert (out / f"{name}.png").stat().st_size > 1000
    assert (out / "report.md").read_text().count("\n## ") >= len(names)


def test_jobs_and_names_are_checked_before_any_worker_starts():
    with pytest.raises(ValueError, match="jobs must be a positive int; received 0"):
        run_parallel(jobs=0)
    with pytest.raises(ValueError, match=r"unknown workloads \['nope'\]"):
        run_parallel(["nope"], jobs=2)
    with pytest.raises(ValueError, match=r"unknown methods \['nope'\]"):
        run_parallel(["digits_cnn"], ["nope"], jobs=2)
