"""Batch statistics agreed across data-parallel replicas (any backend).

Quantizers that update state from the batch they see (moving activation
ranges, first-batch initialisation of a learned step or clipping value) call
these so that every replica of a ``tf.distribute`` strategy stores the same
value, the one a single device would compute on the global batch. On other
backends they are the identity: JAX distribution (``keras.distribution``)
traces one program over the global batch, whose reductions are already global.
"""

from __future__ import annotations

from typing import Any

import keras

__all__ = ["replica_max", "replica_mean", "replica_min"]


def _reduce(x: Any, op: str) -> Any:
    if keras.backend.backend() != "tensorflow":
        return x
    from tfcompress.core.tf_distribute import replica_reduce

    return replica_reduce(x, op)


def replica_max(x: Any) -> Any:
    """Elementwise maximum of ``x`` over the replicas in sync (identity on one device)."""
    return _reduce(x, "max")


def replica_min(x: Any) -> Any:
    """Elementwise minimum of ``x`` over the replicas in sync (identity on one device)."""
    return _reduce(x, "min")


def replica_mean(x: Any) -> Any:
    """Mean of ``x`` over the replicas in sync (identity on one device).

    Exact for a mean statistic when every replica holds the same number of
    examples (the global batch split evenly).
    """
    return _reduce(x, "mean")
