"""Pruning: masks, sparsity schedules, criteria, GradualPruning/KeepSparsity, dynamic sparse
training (RigL), SNIP at initialisation and shrink_model (physical removal of channels)."""
