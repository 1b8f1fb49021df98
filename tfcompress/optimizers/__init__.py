# ruff: noqa: I001  (one import and one name per line: feature branches append theirs)
"""Optimizers for compressed layers: Bop for binary weights."""

from tfcompress.binary.bop import Bop
from tfcompress.binary.bop import is_binary_variable

__all__ = [
    "Bop",
    "is_binary_variable",
]
