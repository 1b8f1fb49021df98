"""Cross-replica reductions for state a forward pass updates under ``tf.distribute``.

Under ``MirroredStrategy`` (and ``MultiWorkerMirroredStrategy``, ``TPUStrategy``)
each replica runs the layer's ``call`` on its own slice of the global batch.
Trainable weights stay in sync because the optimizer all-reduces gradients,
but a statistic measured on the batch (a moving activation range, a
first-batch initial step) would differ per replica, and each replica would
write its own value into its copy of the variable. Reducing the statistic
over replicas first gives every replica the value one device sees on the
global batch, so the copies stay identical and match a single-device run.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

__all__ = ["replica_reduce"]

_OPS = ("max", "min", "mean")


def replica_reduce(x: Any, op: str) -> Any:
    """``x`` reduced over the replicas in sync (``"max"``, ``"min"`` or ``"mean"``).

    Outside a replica context with several replicas (no strategy, or in
    cross-replica context) ``x`` is returned unchanged.

    Args:
        x: A tensor of any shape (every replica passes the same shape).
        op: The reduction.

    Returns:
        A tensor shaped like ``x``, equal on every replica.

    Raises:
        ValueError: For an unknown ``op``.

    Example:
        >>> high = replica_reduce(tf.reduce_max(batch), "max")
    """
    if op not in _OPS:
        raise ValueError(f"op must be one of {_OPS}, got {op!r}")
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return x
    x = tf.convert_to_tensor(x)
    if op == "mean":
        return context.all_reduce(tf.distribute.ReduceOp.MEAN, x)
    # ReduceOp has no MAX/MIN: gather the (small) statistics and reduce locally.
    gathered = context.all_gather(tf.expand_dims(x, 0), axis=0)
    reduce = tf.reduce_max if op == "max" else tf.reduce_min
    return reduce(gathered, axis=0)
