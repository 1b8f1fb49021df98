"""Summaries, tables and plots of a model's compression state."""

from tfcompress.reporting.summary import LayerSummary, ModelSummary, layer_macs, summary
from tfcompress.reporting.table import format_table, format_value

__all__ = [
    "LayerSummary",
    "ModelSummary",
    "format_table",
    "format_value",
    "layer_macs",
    "summary",
]
