"""The suite's smoke run in the test command: every workload, tiny budgets, two workers
(``tfcompress bench suite --tiny --jobs 2``), through the command line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def test_units_go_costliest_first_once_their_workload_is_ready():
    from tfcompress.bench.api import Method
    from tfcompress.bench.parallel import UnitQueue, plan_units

    workloads = {w.name: w for w in list_workloads(quick=True)}
    chosen = [workloads["digits_cnn"], workloads["byte_lm"]]

    def method(name, cost, tasks=("classification", "language_model")):
        return Method(name, None, "pruning", (1, 2, 3, 4), (1,), "x", tasks, relative_cost=cost)

    methods = [
        method("cheap", 1.0),
        method("dear", 5.0),
        method("cnn_only", 9.0, ("classification",)),
    ]
    units = plan_units(chosen, methods, "full", [0, 1, 2])
    labels = [u.label for u in units]
    assert labels == [
        "digits_cnn/dense", "digits_cnn/cheap", "digits_cnn/dear", "digits_cnn/cnn_only",
        "byte_lm/dense", "byte_lm/cheap", "byte_lm/dear",
    ]  # fmt: skip
    by_label = {u.label: u for u in units}
    lm = workloads["byte_lm"].relative_cost
    assert by_label["byte_lm/dear"].cost == pytest.approx(lm * 5.0 * 12)
    queue = UnitQueue(units)
    first, second = queue.take(), queue.take()
    assert {first.label, second.label} == {"digits_cnn/dense", "byte_lm/dense"}
    queue.finish(second, ok=True)
    queue.finish(first, ok=False)  # a failed dense unit drops its workload's methods
    ready = queue.take()
    assert ready.workload.name == second.workload.name and ready.method.name == "dear"
    queue.finish(ready, ok=True)
    rest = [queue.take().label for _ in range(1)]
    assert rest == [f"{second.workload.name}/cheap"] and queue.take() is None


def test_method_units_wait_while_their_dense_unit_runs():
    import threading

    from tfcompress.bench.api import Method
    from tfcompress.bench.parallel import UnitQueue, plan_units

    workload = next(w for w in list_workloads(tiny=True) if w.name == "digits_cnn")
    methods = [Method("m", None, "pruning", (1,), (1,), "x", ("classification",))]
    queue = UnitQueue(plan_units([workload], methods, "tiny", [0]))
    dense = queue.take()
    taken = []
    waiter = threading.Thread(target=lambda: taken.append(queue.take()))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and taken == []  # blocked, not handed a unit it cannot run
    queue.finish(dense, ok=True)
    waiter.join(5)
    assert taken[0].label == "digits_cnn/m" and queue.take() is None


def test_starting_models_are_trained_once_and_shared_through_files(tmp_path, monkeypatch):
    first = next(w for w in list_workloads(tiny=True) if w.name == "lenet_300_100")
    first.share_starting_models(tmp_path)
    trained = first.train(0).get_weights()
    assert (tmp_path / "lenet_300_100_seed0.npz").exists()
    other = next(w for w in list_workloads(tiny=True) if w.name == "lenet_300_100")
    other.share_starting_models(tmp_path)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    import keras

    monkeypatch.setattr(keras.Model, "fit", no_training)
    for a, b in zip(trained, other.train(0).get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_unit_that_breaks_in_the_parent_is_recorded_and_nobody_waits_on_it(monkeypatch, tmp_path):
    from tfcompress.bench import parallel

    monkeypatch.setattr(parallel._Worker, "run", lambda self, spec: None)  # writes no part file
    document = run_parallel(
        ["lenet_300_100"], ["random"], jobs=2, tiny=True, folder=tmp_path, log=lambda text: None
    )
    (failed,) = document["failed_workloads"]
    assert failed["name"] == "lenet_300_100" and failed["error"].startswith("FileNotFoundError")
    assert document["workloads"] == []
