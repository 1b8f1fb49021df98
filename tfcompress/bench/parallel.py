"""The suite on several worker processes (``tfcompress bench suite --jobs 2``).

One workload's arms run in one process, one after another: every arm builds a
new model, and tracing it (fit, predict, export) is single-threaded Python, so
one process keeps about one core busy. With ``jobs`` workers the workloads run
side by side, the slowest first (``Workload.relative_cost``), each in
``python -m tfcompress bench worker``. The latency of every workload's files is
measured afterwards, in this process, with the workers gone, so timings are
taken on a machine as quiet as a one-process run's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tfcompress.bench.suite import prepare_run, sanity_checks, time_workload

__all__ = ["run_parallel"]


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
    """:func:`~tfcompress.bench.suite.run_suite` with workloads on ``jobs`` processes.

    Same arguments and the same document; progress is one line per arm. A
    worker that dies (not an arm that fails: those are recorded as usual) is
    listed under ``"failed_workloads"`` with its exit status and the run goes on.

    Raises:
        ValueError: ``jobs`` < 1, or what :func:`run_suite` raises for names and seeds.
    """
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int; received {jobs!r}")
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    setup = prepare_run(workloads, methods, quick, tiny, seeds, latency_rounds, folder)
    chosen, seeds, rounds, folder = setup.workloads, setup.seeds, setup.rounds, setup.folder
    started = time.perf_counter()
    document = setup.document(jobs=jobs)

    def work(workload) -> tuple[str, dict | None, str | None]:
        spec = {
            "workloads": [workload.name],
            "methods": None if methods is None else list(methods),
            "quick": quick,
            "tiny": tiny,
            "seeds": seeds,
            "folder": str(folder),
            "output": str(folder / f"{workload.name}.part.json"),
        }
        Path(spec["output"]).unlink(missing_ok=True)  # never read an earlier run's part
        log(f"[bench] worker started: {workload.name}")
        began = time.perf_counter()
        command = [sys.executable, "-m", "tfcompress", "bench", "worker", json.dumps(spec)]
        status = subprocess.call(command)
        if status != 0:
            return workload.name, None, f"worker exited with status {status}"
        part = json.loads(Path(spec["output"]).read_text(encoding="utf-8"))
        seconds = time.perf_counter() - began
        log(f"[bench] worker done: {workload.name} ({seconds:.0f} s)")
        return workload.name, {**part["workloads"][0], "seconds": seconds}, None

    slowest_first = sorted(chosen, key=lambda w: -w.relative_cost)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = {name: (entry, error) for name, entry, error in pool.map(work, slowest_first)}
    failed = []
    timing_started = time.perf_counter()
    for workload in chosen:  # the document keeps the order asked for
        entry, error = results[workload.name]
        if entry is None:
            failed.append({"name": workload.name, "error": error})
            log(f"[bench] workload {workload.name}: {error}")
            continue
        if latency:
            time_workload(entry, workload, rounds, log)
        document["workloads"].append(entry)
    if failed:
        document["failed_workloads"] = failed
    document["timing_seconds"] = time.perf_counter() - timing_started
    document["seconds"] = time.perf_counter() - started
    document["sanity"] = sanity_checks(document)
    if setup.temporary is not None:
        setup.temporary.cleanup()
    return document
