"""Shared machinery every technique uses, written once.

Backend checks and per-backend state, gradients of a loss, replica reductions, model rewriting
(clone with replacements), layer walking and selection, calibration data (one normaliser for
arrays, datasets and generators, shape-checked against the model's inputs). Nothing here
imports a technique.
"""
