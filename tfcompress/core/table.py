"""Plain-text tables, shared by ``summary``, ``factorize_model``'s report, the demo, the CLI and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["format_skipped", "format_table", "format_value"]


def format_value(value: Any) -> str:
    """Formats one cell: thousands separators for ints, 4 significant digits for floats."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    return str(value)


def format_table(
    rows: Sequence[Sequence[Any]], headers: Sequence[str], title: str | None = None
) -> str:
    """Returns ``rows`` as an aligned text table (numbers right-aligned)."""
    cells = [[format_value(v) for v in row] for row in rows]
    numeric = [
        all(isinstance(row[i], (int, float)) or row[i] is None for row in rows) if rows else False
        for i in range(len(headers))
    ]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    rule = "-" * len(line(["-" * w for w in widths]))
    out = []
    if title:
        out.append(title)
    out += [line(list(headers)), rule]
    out += [line(r) for r in cells]
    return "\n".join(out)


def format_skipped(skipped: Sequence[tuple[str, str, str]]) -> str:
    """The lines a transform's report adds for layers it left alone: ``(name, type, reason)``."""
    if not skipped:
        return ""
    lines = "\n".join(f"  {name} ({kind}): {why}" for name, kind, why in skipped)
    return "\nleft as they were:\n" + lines
