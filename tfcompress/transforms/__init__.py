"""Model -> model transforms that keep the trained weights."""

from tfcompress.transforms.binarize import binarize_model
from tfcompress.transforms.prune_at_init import prune_at_init
from tfcompress.transforms.shrink import shrink_model

__all__ = [
    "binarize_model",
    "prune_at_init",
    "shrink_model",
]
