"""Shared machinery every technique uses, written once.

Backend checks and per-backend state, gradients of a loss, replica reductions,
layer walking and selection (``walk``), model rewriting (``rewrite``),
activation capture (``capture``), the budget solver (``budget``), the layer
protocols (``protocols``), schedule serialization and plain-text tables.
Nothing here imports a technique (import-linter checks it).
"""
