"""Optimizers for compressed layers: Bop for binary weights."""

from tfcompress.binary.bop import Bop as Bop
from tfcompress.binary.bop import is_binary_variable as is_binary_variable

__all__ = [
    "Bop",
    "is_binary_variable",
]
