"""One worker of a parallel suite run: ``python -m tfcompress bench worker SPEC``.

``SPEC`` is a JSON object with ``run_suite``'s arguments (``workloads``,
``methods``, ``quick``, ``tiny``, ``seeds``, ``folder``) and ``output``, the
path of the JSON document to write. Latency is not measured here (the parent
times every file once the workers are done). Started by
:func:`tfcompress.bench.parallel.run_parallel` through the command line, which
starts TensorFlow without its start-up logs (``python -m tfcompress.bench.worker``
would import the package, and TensorFlow with it, before anything could quiet it).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["run_worker"]


def run_worker(spec_json: str) -> int:
    """Runs the suite as ``spec_json`` says and writes its document; returns 0."""
    spec = json.loads(spec_json)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # per-arm retracing is by design (see bench.cli)
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
    )
    write_text(Path(spec["output"]), json.dumps(to_json_ready(document)))
    return 0
