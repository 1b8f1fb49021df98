"""tfcompress under ``keras.distribution.DataParallel`` on two JAX CPU devices.

``tests/jax_distribute_worker.py`` runs in a subprocess with ``KERAS_BACKEND=jax`` and
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (both must be set before JAX
and Keras start, so this test runs in the TensorFlow session and needs no ``jax``
marker). Each feature is trained for 8 steps of a 32-example global batch on one
device and data-parallel over both (the trainer shards every batch 16 + 16, the
variables are replicated), from the same initial weights
(``tests/distribute_cases.py``). Checked: weights within 1e-5 (measured: <= 5e-7),
loss and outputs within 1e-5 relative, every variable replicated on both devices,
pruning masks identical with the same sparsity.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from distribute_checks import EXPECTED_SPARSITY, check_masks, check_matches

ROOT = Path(__file__).resolve().parents[1]
CASES = [
    "pruning_unstructured",
    "pruning_block",
    "pruning_channel",
    "pruning_2_4",
    "dynamic_sparse",
    "distillation",
    "distillation_with_pruning",
    "quant_layers",
    "binary_layers",
    "lowrank_layers",
]


@pytest.fixture(scope="module")
def results():
    check = subprocess.run([sys.executable, "-c", "import jax"], capture_output=True)
    if check.returncode != 0:
        pytest.skip("jax is not installed (it needs Python 3.11+)")
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="jax")
    out = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "jax_distribute_worker.py"), *CASES],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=420,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULTS ")][-1]
    return json.loads(line[len("RESULTS ") :])


def test_two_jax_devices(results):
    assert results["backend"] == "jax"
    assert results["devices"] == 2
    assert results["data_layout"] == "('batch', None, None, None)"  # batches split


@pytest.mark.parametrize("case", CASES)
def test_data_parallel_matches_one_device(results, case):
    result = results[case]
    check_matches(result)
    assert result["n_replicated"] == result["n_variables"]  # on both devices


@pytest.mark.parametrize("case", sorted(c for c in CASES if c in EXPECTED_SPARSITY))
def test_data_parallel_masks_identical(results, case):
    check_masks(results[case], case)
