"""The demo's results as the Markdown table the README shows.

    python -m tfcompress.demo.markdown demo_output/results.json

prints the table for a ``results.json`` written by ``tfcompress demo``; the
README's quick-start table is this output for ``docs/demo_results.json``
(``tests/test_readme_numbers.py`` checks that they agree).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["load_results", "results_markdown"]

_HEADERS = (
    "technique",
    "Keras acc %",
    "TFLite acc %",
    ".tflite bytes",
    "gzip bytes",
    "ratio",
    "gzip ratio",
    "latency us",
    "note",
)


def load_results(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a demo ``results.json`` (a list of objects, one per technique).

    Raises:
        ValueError: If the file does not hold a list of objects with a ``technique`` key.
    """
    rows = json.loads(Path(path).read_text())
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and "technique" in r for r in rows
    ):
        raise ValueError(
            f"{path} is not a demo results.json (expected a list of objects with a 'technique' key)"
        )
    return rows


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.2f}"
    if kind == "int":
        return f"{value:,}"
    if kind == "ratio":
        return f"{value:.3f}"
    if kind == "ms_as_us":
        return f"{1000 * value:.0f}"
    return str(value)


def results_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of demo rows (accuracy in %, bytes, ratios to float32, latency in us).

    Args:
        rows: ``results.json`` entries (``DemoRow`` fields).

    Returns:
        The table, one line per row, ending in a newline.
    """
    lines = ["| " + " | ".join(_HEADERS) + " |", "|---" * len(_HEADERS) + "|"]
    for r in rows:
        cells = [
            r["technique"],
            _cell(r.get("keras_accuracy"), "pct"),
            _cell(r.get("tflite_accuracy"), "pct"),
            _cell(r.get("tflite_bytes"), "int"),
            _cell(r.get("gzip_bytes"), "int"),
            _cell(r.get("ratio_to_float"), "ratio"),
            _cell(r.get("gzip_ratio_to_float"), "ratio"),
            _cell(r.get("latency_ms"), "ms_as_us"),
            r.get("error") or r.get("note") or "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tfcompress.demo.markdown RESULTS_JSON")
    print(results_markdown(load_results(sys.argv[1])), end="")
