"""A worker of a parallel suite run: ``python -m tfcompress bench worker [SPEC | --serve]``.

``SPEC`` is a JSON object with ``run_suite``'s arguments (``workloads``,
``methods``, ``quick``, ``tiny``, ``seeds``, ``folder``, and optionally
``dense`` and ``starting_models``) and ``output``, the path of the JSON document
to write. With ``--serve`` the worker reads one such spec per line on stdin and
runs them one after another in the same process (TensorFlow starts once; a
method's level-independent measurements are reused across its levels), answering
each with a line ``DONE_MARKER {"output": ...}`` on stdout. Latency is not
measured here (the parent times every file once the workers are done). Started
by :func:`tfcompress.bench.parallel.run_parallel` through the command line,
which starts TensorFlow without its start-up logs (``python -m
tfcompress.bench.worker`` would import the package, and TensorFlow with it,
before anything could quiet it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO

__all__ = ["DONE_MARKER", "run_worker", "serve"]

DONE_MARKER = "@@tfcompress-bench-unit-done"


def _quiet_tensorflow() -> None:
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # per-arm retracing is by design (see bench.cli)


def _run_spec(spec: dict) -> None:
    from tfcompress.bench.suite import run_suite, to_json_ready
    from tfcompress.core.io import write_text

    document = run_suite(
        spec["workloads"],
        spec["methods"],
        quick=spec["quick"],
        tiny=spec["tiny"],
        seeds=spec["seeds"],
        latency=False,
        folder=spec["folder"],
        verbose=2,
        dense=spec.get("dense", True),
        starting_models=spec.get("starting_models"),
    )
    write_text(Path(spec["output"]), json.dumps(to_json_ready(document)))


def run_worker(spec_json: str) -> int:
    """Runs the suite as ``spec_json`` says and writes its document; returns 0."""
    _quiet_tensorflow()
    _run_spec(json.loads(spec_json))
    return 0


def serve(lines: IO[str] = sys.stdin, answers: IO[str] = sys.stdout) -> int:
    """Runs one spec per line of ``lines`` until they end; returns 0.

    Each finished spec is answered with ``DONE_MARKER`` and a JSON object
    (``output``, and ``error`` when the suite itself raised: arms that fail are
    recorded in the document as usual).
    """
    _quiet_tensorflow()
    for line in lines:
        if not line.strip():
            continue
        spec = json.loads(line)
        answer = {"output": spec["output"]}
        try:
            _run_spec(spec)
        except Exception as error:  # the parent records it; the next unit still runs
            answer["error"] = f"{type(error).__name__}: {error}"
        answers.write(f"{DONE_MARKER} {json.dumps(answer)}\n")
        answers.flush()
    return 0
