"""Trains tfcompress features on one device and under MirroredStrategy; prints JSON diffs.

Run by ``tests/test_distribute.py`` in a subprocess: TensorFlow's logical
devices must be configured before it initialises them, which a pytest session
has already done. Every case (``tests/distribute_cases.py``) builds the same
model from the same seed, trains it for a few steps on the same global batches
once on the default (single device) strategy and once under
``MirroredStrategy`` over two logical CPUs, and reports the largest weight
difference, whether masks agree exactly, and whether the two replicas' copies
of every variable are identical.

Usage: ``python tests/distribute_worker.py [case ...]`` (default: all cases).
"""

from __future__ import annotations

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import distribute_cases as dc  # noqa: E402

CASES = dc.CASES


def replica_spread(model: keras.Model) -> float:
    """Largest difference between the per-replica copies of any model variable."""
    spread = 0.0
    for variable in model.variables:
        copies = getattr(variable.value, "values", None)
        if copies and len(copies) > 1:
            first = dc.to_numpy(copies[0])
            spread = max(spread, max(float(np.abs(dc.to_numpy(c) - first).max()) for c in copies))
    return spread


def n_distributed(model: keras.Model) -> int:
    return sum(isinstance(v.value, tf.distribute.DistributedValues) for v in model.variables)


def run_case(name: str, mirrored) -> dict:
    case = dc.prepare(name)
    single = dc.train(case)
    multi = dc.train(case, mirrored.scope)
    result = dc.compare(case, single, multi)
    # The names test_distribute.py reads.
    result["loss_mirrored"] = result.pop("loss_multi")
    result["replicas"] = mirrored.num_replicas_in_sync
    result["n_distributed"] = n_distributed(multi.model)
    result["n_variables"] = len(multi.model.variables)
    result["replica_spread"] = replica_spread(multi.model)
    callback = dc.masked(multi)
    if callback is not None:
        result["sparsity_mirrored"] = result.pop("sparsity_multi")
        result["mask_variables_distributed"] = all(
            isinstance(m.value, tf.distribute.DistributedValues) for m in callback.masks
        )
    return result


def main(names: list[str]) -> None:
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results: dict = {}
    for name in names or list(CASES):
        with dc.reported(results, name) as result:
            result.update(run_case(name, mirrored))
    print("RESULTS " + json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
