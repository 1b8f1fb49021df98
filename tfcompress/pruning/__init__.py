"""Pruning: masks, sparsity schedules, criteria, GradualPruning/KeepSparsity, dynamic sparse
training (RigL), SNIP at initialisation, L0 gates under a MACs constraint and shrink_model
(physical removal of channels)."""

from tfcompress.pruning.constraint import PruningMask, remove_masks
from tfcompress.pruning.hard_concrete import HardConcreteGate
from tfcompress.pruning.l0 import L0Report, add_l0_gates, remove_l0_gates
from tfcompress.pruning.l0_constraint import L0MacsConstraint
from tfcompress.pruning.mfac_criterion import MFACCriterion

__all__ = [
    "HardConcreteGate",
    "L0MacsConstraint",
    "L0Report",
    "MFACCriterion",
    "PruningMask",
    "add_l0_gates",
    "remove_l0_gates",
    "remove_masks",
]
