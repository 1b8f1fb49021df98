"""tfcompress under ``tf.distribute.MirroredStrategy`` over two logical CPU devices.

Each feature is trained for 8 steps of a 32-example global batch on one device
and under the strategy, from the same initial weights on the same batches
(``tests/distribute_worker.py``, run once in a subprocess because logical
devices must be set before TensorFlow initialises). The two runs differ only
by float summation order (two half-batch gradients summed vs one), so:

* weights agree within 1e-5 absolute (measured: <= 7e-7);
* the loss and the model outputs agree within 1e-5 relative (measured: <= 1e-6);
* pruning masks are identical and reach the same sparsity;
* every model variable (masks and quantizer ranges included) is mirrored and
  its two replica copies are bit-identical.

The distillation teacher's own strategy test is ``test_distillation_mirrored.py``;
here it is checked composed with GradualPruning.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from distribute_checks import check_masks, check_matches

ROOT = Path(__file__).resolve().parents[1]
CASES = [
    "pruning_unstructured",
    "pruning_channel",
    "dynamic_sparse",
    "distillation_with_pruning",
    "quantize_model",
    "quant_layers",
    "binarize_model_bop",
    "binary_layers",
    "factorize_model",  # its model holds LowRankConv2D and LowRankDense layers
]
MASKED = {"pruning_unstructured", "pruning_channel", "dynamic_sparse", "distillation_with_pruning"}


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "distribute_worker.py"), *CASES],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULTS ")][-1]
    return json.loads(line[len("RESULTS ") :])


@pytest.mark.parametrize("case", CASES)
def test_mirrored_matches_single_device(results, case):
    result = results[case]
    check_matches(result, "mirrored")
    assert result["replicas"] == 2
    # Every variable, masks and quantizer state included, lives on both
    # replicas, and the two copies never drift apart.
    assert result["n_distributed"] == result["n_variables"]
    assert result["replica_spread"] == 0.0


@pytest.mark.parametrize("case", sorted(MASKED))
def test_mirrored_masks_identical(results, case):
    result = results[case]
    check_masks(result, case, "mirrored")
    assert result["mask_variables_distributed"]


def test_replica_reduce_outside_a_strategy_is_identity():
    import numpy as np
    import tensorflow as tf

    from tfcompress.core.replicas import replica_max, replica_mean, replica_min
    from tfcompress.core.tf_distribute import replica_reduce

    x = tf.constant([1.0, -2.0, 3.0])
    for reduce in (replica_max, replica_min, replica_mean):
        np.testing.assert_array_equal(reduce(x).numpy(), x.numpy())
        traced = tf.function(reduce)(x)
        np.testing.assert_array_equal(traced.numpy(), x.numpy())
    with pytest.raises(ValueError, match="op must be one of"):
        replica_reduce(x, "sum")
