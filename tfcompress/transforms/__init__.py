"""Model -> model transforms that keep the trained weights."""

from tfcompress.binary.binarize import binarize_model
from tfcompress.clustering.cluster_model import cluster_model
from tfcompress.core.rewrite import Replacement
from tfcompress.lowrank.factorize import FactorizeReport, expand_lowrank, factorize_model
from tfcompress.pruning.constraint import remove_masks
from tfcompress.pruning.shrink import shrink_model
from tfcompress.pruning.snip import prune_at_init
from tfcompress.quantization.quantize_model import (
    CONFIG_NAMES,
    QuantizeConfig,
    SkippedLayer,
    SkipReason,
    quantize_model,
)
from tfcompress.quantization.scheme import (
    ActivationRule,
    LayerPlan,
    OutputRangeRule,
    PassThroughRule,
    QuantizeRule,
    QuantizeScheme,
    WeightRule,
)

__all__ = [
    "CONFIG_NAMES",
    "ActivationRule",
    "FactorizeReport",
    "LayerPlan",
    "OutputRangeRule",
    "PassThroughRule",
    "QuantizeConfig",
    "QuantizeRule",
    "QuantizeScheme",
    "Replacement",
    "SkipReason",
    "SkippedLayer",
    "WeightRule",
    "binarize_model",
    "cluster_model",
    "expand_lowrank",
    "factorize_model",
    "prune_at_init",
    "quantize_model",
    "remove_masks",
    "shrink_model",
]
