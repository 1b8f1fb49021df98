# ruff: noqa: I001  (one import per line: feature branches append theirs)
"""Model -> model transforms that keep the trained weights."""

from tfcompress.transforms.quantize import QuantizeConfig
from tfcompress.transforms.quantize import quantize_model

__all__: list[str] = [
    "QuantizeConfig",
    "quantize_model",
from tfcompress.transforms.prune_at_init import prune_at_init
from tfcompress.transforms.shrink import shrink_model

__all__ = [
    "prune_at_init",
    "shrink_model",
]
