"""Trains tfcompress features on one JAX device and under ``keras.distribution.DataParallel``.

Run by ``tests/test_distribute_jax.py`` in a subprocess: the two CPU devices exist
only if ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` is set before JAX
starts, and the backend must be chosen before Keras is imported. Every case of
``tests/distribute_cases.py`` named on the command line is trained for 8 steps of a
32-example global batch once with no distribution (one device) and once with
``DataParallel`` over both devices (the trainer splits each batch 16 + 16), from the
same initial weights; prints one ``RESULTS {json}`` line.

Usage: ``python tests/jax_distribute_worker.py [case ...]``
"""

from __future__ import annotations

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax
import keras

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import distribute_cases as dc


def run_case(name: str, distribution) -> dict:
    case = dc.prepare(name)
    single = dc.train(case)
    multi = dc.train(case, distribution.scope, distribution.scope)
    result = dc.compare(case, single, multi)
    values = [v.value for v in multi.model.variables]
    result["n_variables"] = len(values)
    result["n_replicated"] = sum(
        len(v.sharding.device_set) == 2 and v.sharding.is_fully_replicated for v in values
    )
    return result


def main(names: list[str]) -> None:
    devices = jax.devices("cpu")
    distribution = keras.distribution.DataParallel(devices=devices)
    results: dict = {
        "backend": keras.backend.backend(),
        "devices": len(devices),
        "data_layout": str(distribution.get_data_layout((dc.BATCH, 8, 8, 1)).axes),
    }
    for name in names or list(dc.CASES):
        with dc.reported(results, name) as result:
            result.update(run_case(name, distribution))
    print("RESULTS " + json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
