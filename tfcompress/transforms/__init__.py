"""Model -> model transforms that keep the trained weights."""

from tfcompress.transforms.binarize import binarize_model

__all__ = [
    "binarize_model",
]
