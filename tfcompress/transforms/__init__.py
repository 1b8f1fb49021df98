"""Model -> model transforms that keep the trained weights."""

from tfcompress.transforms.binarize import binarize_model
from tfcompress.transforms.cluster import cluster_model
from tfcompress.transforms.factorize import FactorizeReport, expand_lowrank, factorize_model
from tfcompress.transforms.prune_at_init import prune_at_init
from tfcompress.transforms.quantize import QuantizeConfig, quantize_model
from tfcompress.transforms.shrink import shrink_model

__all__ = [
    "FactorizeReport",
    "QuantizeConfig",
    "binarize_model",
    "cluster_model",
    "expand_lowrank",
    "factorize_model",
    "prune_at_init",
    "quantize_model",
    "shrink_model",
]
