"""The assertions the three distribute tests share (results as their workers report them).

``tests/test_distribute.py`` (MirroredStrategy, arm ``"mirrored"``),
``tests/test_distribute_multiworker.py`` and ``tests/test_distribute_jax.py`` (arm
``"multi"``) compare a data-parallel run with one device on the cases of
``tests/distribute_cases.py``; this module holds their tolerances and checks.
Plain Python: importing it starts no backend.
"""

from __future__ import annotations

import pytest

WEIGHT_ATOL = 1e-5
RELATIVE_TOL = 1e-5
# The pruning cases' target sparsity (distribute_cases.SPARSITY and the RigL/ERK case).
EXPECTED_SPARSITY = {
    "pruning_unstructured": 0.75,
    "pruning_block": 0.75,
    "pruning_channel": 0.5,
    "pruning_2_4": 0.5,
    "dynamic_sparse": 0.7,
    "distillation_with_pruning": 0.5,
}


def no_error(result: dict) -> None:
    assert "error" not in result, result.get("traceback", result.get("error"))


def check_matches(result: dict, arm: str = "multi") -> None:
    """Training happened, and weights, loss and outputs match one device."""
    no_error(result)
    assert result["moved"] > 1e-3  # some trainable weight moved visibly
    assert result["max_weight_diff"] <= WEIGHT_ATOL, result["worst_weight"]
    loss_gap = abs(result["loss_single"] - result[f"loss_{arm}"])
    assert loss_gap <= RELATIVE_TOL * abs(result["loss_single"])
    assert result["max_output_diff"] <= RELATIVE_TOL * max(1.0, result["output_scale"])


def check_masks(result: dict, case: str, arm: str = "multi") -> None:
    """Identical masks, and the target sparsity reached in both arms."""
    no_error(result)
    assert result["masks_equal"]
    assert result["sparsity_single"] == result[f"sparsity_{arm}"]
    assert result[f"sparsity_{arm}"] == pytest.approx(EXPECTED_SPARSITY[case], abs=2e-3)
