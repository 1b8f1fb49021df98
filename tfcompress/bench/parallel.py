"""The suite on several worker processes (``tfcompress bench suite --jobs 2``).

The work is cut into units: per workload, one unit that trains (or loads) and
exports its dense starting models, then one unit per method that applies. Each
of ``jobs`` worker processes (``python -m tfcompress bench worker --serve``)
runs units one after another; whenever a worker is free it gets the costliest
unit whose workload's starting models are ready (``Workload.relative_cost`` x
``Method.relative_cost`` x arms), so the workers finish close together even
though one workload (the MobileNet-style model, the language model) holds most
of the work. All levels and seeds of one method run in one process, so what a
method measures once per starting model serves all its levels. Trained
starting weights are shared through files in the run's folder. The latency of
every workload's files is measured afterwards, in this process, with the
workers gone, so timings are taken on a machine as quiet as a one-process run's.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tfcompress.bench.suite import levels_for, prepare_run, sanity_checks, seeds_for, time_workload
from tfcompress.bench.worker import DONE_MARKER

__all__ = ["Unit", "UnitQueue", "plan_units", "run_parallel"]


@dataclasses.dataclass
class Unit:
    """One workload's dense reference (``method`` None) or one method's arms on it."""

    workload: Any
    method: Any
    cost: float

    @property
    def label(self) -> str:
        return f"{self.workload.name}/{self.method.name if self.method else 'dense'}"


def plan_units(workloads: Sequence[Any], methods: Sequence[Any], configuration: str, seeds):
    """Every unit of a run: per workload its dense unit, then a unit per applicable method."""
    units = []
    for workload in workloads:
        units.append(Unit(workload, None, float("inf")))  # dense references go first
        arms_seeds = len(seeds_for(workload, seeds))
        for method in methods:
            if method.applies(workload):
                arms = len(levels_for(method, workload, configuration)) * arms_seeds
                cost = workload.relative_cost * method.relative_cost * arms
                units.append(Unit(workload, method, cost))
    return units


class UnitQueue:
    """Hands out the costliest ready unit; a workload's method units are ready once its
    dense unit is done (their starting models are on disk), and never if it failed."""

    def __init__(self, units: Sequence[Unit]):
        self._waiting = list(units)
        self._ready_workloads: set[str] = set()
        self._failed_workloads: set[str] = set()
        self._running_dense = 0
        self._condition = threading.Condition()

    def _ready(self, unit: Unit) -> bool:
        return unit.method is None or unit.workload.name in self._ready_workloads

    def take(self) -> Unit | None:
        """The next unit (blocking while only units of unready workloads remain), or None."""
        with self._condition:
            while True:
                self._waiting = [
                    u for u in self._waiting if u.workload.name not in self._failed_workloads
                ]
                ready = [u for u in self._waiting if self._ready(u)]
                if ready:
                    unit = max(ready, key=lambda u: u.cost)
                    self._waiting.remove(unit)
                    self._running_dense += unit.method is None
                    return unit
                if not self._waiting or not self._running_dense:
                    return None
                self._condition.wait()

    def finish(self, unit: Unit, ok: bool) -> None:
        """Records a unit's end (a dense unit's success frees its workload's methods)."""
        with self._condition:
            if unit.method is None:
                self._running_dense -= 1
                (self._ready_workloads if ok else self._failed_workloads).add(unit.workload.name)
            self._condition.notify_all()


class _Worker:
    """One ``bench worker --serve`` process; restarted if it dies."""

    def __init__(self):
        self.process: subprocess.Popen | None = None

    def run(self, spec: dict) -> str | None:
        """Runs one spec; None when done, else the error (the worker died or the unit raised)."""
        if self.process is None or self.process.poll() is not None:
            command = [sys.executable, "-m", "tfcompress", "bench", "worker", "--serve"]
            self.process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
            )
        try:
            self.process.stdin.write(json.dumps(spec) + "\n")
            self.process.stdin.flush()
        except OSError as error:
            return f"worker could not take the unit: {error}"
        for line in self.process.stdout:
            if line.startswith(DONE_MARKER):
                return json.loads(line[len(DONE_MARKER) :]).get("error")
            sys.stdout.write(line)  # anything else a method printed
        status = self.process.wait()
        self.process = None
        return f"worker exited with status {status}"

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()


def _merge(parts: dict, order: Sequence[Any]) -> dict:
    """The workload's entry: the dense unit's entry with every method unit's arms, in the
    order the methods were asked for."""
    entry = dict(parts[None])
    entry["arms"] = [arm for m in order if m.name in parts for arm in parts[m.name]["arms"]]
    entry["seconds"] = sum(part["unit_seconds"] for part in parts.values())
    return entry


def run_parallel(
    workloads: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    *,
    jobs: int = 2,
    quick: bool = False,
    tiny: bool = False,
    seeds: Sequence[int] | None = None,
    latency: bool = True,
    latency_rounds: int | None = None,
    folder: str | Path | None = None,
    log: Callable[[str], Any] | None = None,
) -> dict:
    """:func:`~tfcompress.bench.suite.run_suite` on ``jobs`` worker processes.

    Same arguments and the same document, plus ``"units"`` (each unit's
    worker seconds); progress is one line per arm. A unit whose worker dies
    (not an arm that fails: those are recorded as usual) is listed under
    ``"failed_units"`` and the run goes on; a workload whose dense unit fails
    is listed under ``"failed_workloads"`` and its methods are skipped.

    Raises:
        ValueError: ``jobs`` < 1, or what :func:`run_suite` raises for names and seeds.
    """
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be a positive int; received {jobs!r}")
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    setup = prepare_run(workloads, methods, quick, tiny, seeds, latency_rounds, folder)
    chosen, seeds, rounds, folder = setup.workloads, setup.seeds, setup.rounds, setup.folder
    started = time.perf_counter()
    document = setup.document(jobs=jobs)
    units = plan_units(chosen, setup.methods, setup.configuration, seeds)
    queue = UnitQueue(units)
    parts: dict[str, dict] = {w.name: {} for w in chosen}
    failures: list[dict] = []
    starting_models = folder / "starting_models"
    lock = threading.Lock()

    def work() -> None:
        worker = _Worker()
        try:
            while (unit := queue.take()) is not None:
                key = unit.method.name if unit.method else None
                output = folder / f"{unit.label.replace('/', '.')}.part.json"
                output.unlink(missing_ok=True)  # never read an earlier run's part
                spec = {
                    "workloads": [unit.workload.name],
                    "methods": [unit.method.name] if unit.method else [],
                    "quick": quick,
                    "tiny": tiny,
                    "seeds": seeds,
                    "folder": str(folder),
                    "output": str(output),
                    "dense": unit.method is None,
                    "starting_models": str(starting_models),
                }
                log(f"[bench] unit started: {unit.label}")
                began = time.perf_counter()
                try:
                    error = worker.run(spec)
                    part = None
                    if error is None:
                        part = json.loads(output.read_text(encoding="utf-8"))["workloads"][0]
                except Exception as failure:  # a unit's end must always reach the queue,
                    error = f"{type(failure).__name__}: {failure}"  # or the others wait on it
                seconds = time.perf_counter() - began
                if error is None:
                    with lock:
                        parts[unit.workload.name][key] = {**part, "unit_seconds": seconds}
                    log(f"[bench] unit done: {unit.label} ({seconds:.0f} s)")
                else:
                    with lock:
                        failures.append({"unit": unit.label, "error": error})
                    log(f"[bench] unit {unit.label}: {error}")
                queue.finish(unit, error is None)
        finally:
            worker.close()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = []
    timing_started = time.perf_counter()
    for workload in chosen:  # the document keeps the order asked for
        if None not in parts[workload.name]:
            error = next(f["error"] for f in failures if f["unit"] == f"{workload.name}/dense")
            failed.append({"name": workload.name, "error": error})
            log(f"[bench] workload {workload.name}: {error}")
            continue
        entry = _merge(parts[workload.name], setup.methods)
        if latency:
            time_workload(entry, workload, rounds, log)
        document["workloads"].append(entry)
    if failed:
        document["failed_workloads"] = failed
    method_failures = [f for f in failures if not f["unit"].endswith("/dense")]
    if method_failures:
        document["failed_units"] = method_failures
    document["units"] = {
        f"{name}/{key or 'dense'}": part["unit_seconds"]
        for name, by_method in parts.items()
        for key, part in by_method.items()
    }
    document["timing_seconds"] = time.perf_counter() - timing_started
    document["seconds"] = time.perf_counter() - started
    document["sanity"] = sanity_checks(document)
    if setup.temporary is not None:
        setup.temporary.cleanup()
    return document
