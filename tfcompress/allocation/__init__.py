"""Budgets instead of per-layer knobs: per-layer choices under one measured budget.

``tfc.allocate.bits`` chooses each layer's weight bits so the int8 TFLite file
fits a byte budget (mixed precision); ``tfc.allocate.sparsity`` chooses each
layer's channel sparsity so the model meets a latency target measured in
LiteRT (SPDY). Both measure costs (file bytes, per-layer latency tables) and
per-option errors, solve the multiple-choice knapsack of
:func:`tfcompress.core.budget.solve_budget`, and return a plan that prints as a
table, applies itself in one shot and converts to the training-time knobs.
See ``docs/allocation.md``.
"""

from tfcompress.allocation.bits import BitsPlan, bits, container_bits
from tfcompress.allocation.channel_plan import SparsityPlan
from tfcompress.allocation.plan import LayerChoice, Plan
from tfcompress.allocation.sparsity import sparsity

__all__ = [
    "BitsPlan",
    "LayerChoice",
    "Plan",
    "SparsityPlan",
    "bits",
    "container_bits",
    "sparsity",
]
