"""Pruning: masks, sparsity schedules, criteria, GradualPruning/KeepSparsity, dynamic sparse
training (RigL), SNIP at initialisation and shrink_model (physical removal of channels)."""

from tfcompress.pruning.constraint import PruningMask, remove_masks

__all__ = ["PruningMask", "remove_masks"]
