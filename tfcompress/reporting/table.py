"""Plain-text tables (the formatter lives in :mod:`tfcompress.core.table`, where techniques reach it)."""

from tfcompress.core.table import format_table, format_value

__all__ = ["format_table", "format_value"]
