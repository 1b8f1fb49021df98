"""Summaries, tables and plots of a model's compression state."""

from tfcompress.reporting.robustness import RobustnessReport as RobustnessReport
from tfcompress.reporting.robustness import robustness as robustness
from tfcompress.reporting.summary import LayerSummary as LayerSummary
from tfcompress.reporting.summary import ModelSummary as ModelSummary
from tfcompress.reporting.summary import layer_macs as layer_macs
from tfcompress.reporting.summary import summary as summary
from tfcompress.reporting.table import format_table as format_table
from tfcompress.reporting.table import format_value as format_value

__all__ = [
    "LayerSummary",
    "ModelSummary",
    "RobustnessReport",
    "format_table",
    "format_value",
    "layer_macs",
    "robustness",
    "summary",
]
