# ruff: noqa: I001, RUF022  (one import and one name per line: feature branches append theirs)
"""Model -> model transforms that keep the trained weights."""

from tfcompress.transforms.cluster import cluster_model

__all__ = [
    "cluster_model",
]
