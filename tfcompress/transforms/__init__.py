"""Model -> model transforms that keep the trained weights."""

from tfcompress.binary.binarize import binarize_model as binarize_model
from tfcompress.clustering.cluster_model import cluster_model as cluster_model
from tfcompress.compact.replace import compact_model as compact_model
from tfcompress.compact.report import CompactReport as CompactReport
from tfcompress.compact.transferred_convert import TransferReport as TransferReport
from tfcompress.compact.transferred_convert import to_transferred as to_transferred
from tfcompress.core.rewrite import Replacement as Replacement
from tfcompress.lowrank.factorize import FactorizeReport as FactorizeReport
from tfcompress.lowrank.factorize import expand_lowrank as expand_lowrank
from tfcompress.lowrank.factorize import factorize_model as factorize_model
from tfcompress.pruning.constraint import remove_masks as remove_masks
from tfcompress.pruning.shrink import shrink_model as shrink_model
from tfcompress.pruning.snip import prune_at_init as prune_at_init
from tfcompress.quantization.quantize_model import CONFIG_NAMES as CONFIG_NAMES
from tfcompress.quantization.quantize_model import QuantizeConfig as QuantizeConfig
from tfcompress.quantization.quantize_model import SkippedLayer as SkippedLayer
from tfcompress.quantization.quantize_model import SkipReason as SkipReason
from tfcompress.quantization.quantize_model import quantize_model as quantize_model
from tfcompress.quantization.scheme import ActivationRule as ActivationRule
from tfcompress.quantization.scheme import LayerPlan as LayerPlan
from tfcompress.quantization.scheme import OutputRangeRule as OutputRangeRule
from tfcompress.quantization.scheme import PassThroughRule as PassThroughRule
from tfcompress.quantization.scheme import QuantizeRule as QuantizeRule
from tfcompress.quantization.scheme import QuantizeScheme as QuantizeScheme
from tfcompress.quantization.scheme import WeightRule as WeightRule
from tfcompress.structured.convert import StructureReport as StructureReport
from tfcompress.structured.convert import densify as densify
from tfcompress.structured.convert import structure_model as structure_model

__all__ = [
    "CONFIG_NAMES",
    "ActivationRule",
    "CompactReport",
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
    "StructureReport",
    "TransferReport",
    "WeightRule",
    "binarize_model",
    "cluster_model",
    "compact_model",
    "densify",
    "expand_lowrank",
    "factorize_model",
    "prune_at_init",
    "quantize_model",
    "remove_masks",
    "shrink_model",
    "structure_model",
    "to_transferred",
]
