"""Shared machinery every technique uses, written once.

Backend checks and per-backend state, gradients of a loss, the inverse empirical
Fisher from gradients (``fisher``, M-FAC), replica reductions,
layer walking and selection (``walk``), model rewriting (``rewrite``),
calibration data (``calibration``: one normaliser for arrays, datasets and
generators, shape-checked against the model's inputs), activation capture
(``capture``), the budget solver (``budget``), the layer protocols
(``protocols``), atomic file writes (``io``), schedule serialization and
plain-text tables. Nothing here imports a technique (import-linter checks it).
"""
