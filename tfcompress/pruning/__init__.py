"""Pruning: masks, sparsity schedules, criteria, GradualPruning/KeepSparsity, dynamic sparse
training (RigL), SNIP at initialisation and shrink_model (physical removal of channels)."""

from tfcompress.pruning.constraint import PruningMask, remove_masks
from tfcompress.pruning.mfac_criterion import MFACCriterion

__all__ = ["MFACCriterion", "PruningMask", "remove_masks"]
