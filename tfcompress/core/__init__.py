"""Shared machinery every technique uses, written once.

Backend checks and per-backend state, gradients of a loss, replica reductions, model rewriting
(clone with replacements), layer walking and selection. Nothing here imports a technique.
"""
