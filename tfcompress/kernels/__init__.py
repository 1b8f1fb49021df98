"""Compiled kernels with pure fallbacks. ``kernels.tf``: custom TensorFlow ops (bit packing,
XNOR-popcount). Below the techniques, because binary layers call them at inference."""
