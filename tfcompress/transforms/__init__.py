"""Model -> model transforms that keep the trained weights."""

from tfcompress.transforms.cluster import cluster_model

__all__ = [
    "cluster_model",
]
