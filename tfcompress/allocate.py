"""``tfc.allocate``: per-layer choices under one budget (the public face of :mod:`tfcompress.allocation`).

Example:
    >>> plan = tfc.allocate.sparsity(model, x_train[:512], target_latency=0.5, structure="channel")
    >>> small = plan.apply(model)  # channels pruned and removed: ~0.5 x the LiteRT latency
    >>> plan = tfc.allocate.bits(model, x_train[:256], target_ratio=0.15, choices=(2, 4, 8))
    >>> print(plan)
    >>> small = plan.apply(model)
"""

from tfcompress.allocation import (
    BitsPlan,
    LayerChoice,
    Plan,
    SparsityPlan,
    bits,
    container_bits,
    sparsity,
)

__all__ = [
    "BitsPlan",
    "LayerChoice",
    "Plan",
    "SparsityPlan",
    "bits",
    "container_bits",
    "sparsity",
]
