"""The README's quick-start table is the demo's output, not a hand-kept copy.

``docs/demo_results.json`` is the ``results.json`` of one ``tfcompress demo``
run; the README's table between the demo-table markers must be exactly
``python -m tfcompress.demo.markdown docs/demo_results.json``, and the run must
cover every technique the demo has today.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tfcompress.demo.markdown import load_results, results_markdown
from tfcompress.demo.runner import discover

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "demo_results.json"
BEGIN, END = "<!-- demo-table:begin", "<!-- demo-table:end -->"


def region(text: str) -> str:
    assert text.count(BEGIN) == 1 and text.count(END) == 1, "one demo-table marker pair expected"
    start = text.index("\n", text.index(BEGIN)) + 1
    return text[start : text.index(END)]


def test_readme_table_is_generated_from_the_demo_results():
    expected = results_markdown(load_results(RESULTS))
    assert region((ROOT / "README.md").read_text()) == expected, (
        "README.md's quick-start table differs from docs/demo_results.json; after a demo run, "
        "copy demo_output/results.json to docs/demo_results.json and paste "
        "`python -m tfcompress.demo.markdown docs/demo_results.json` between the markers"
    )


def test_demo_results_cover_every_technique_without_errors():
    rows = load_results(RESULTS)
    assert [r["technique"] for r in rows] == [t.name for t in discover()]
    assert [r["technique"] for r in rows if r["error"]] == []
    assert all(r["ratio_to_float"] and r["latency_ms"] for r in rows)


def test_markdown_table_formats_each_column():
    row = {
        "technique": "int8 PTQ",
        "keras_accuracy": 0.97214,
        "tflite_accuracy": 0.97493,
        "tflite_bytes": 174976,
        "gzip_bytes": 160312,
        "ratio_to_float": 0.27204,
        "gzip_ratio_to_float": 0.2714,
        "latency_ms": 0.0189,
        "note": "full integer",
        "error": None,
    }
    failed = {"technique": "x", "error": "TypeError: boom"}
    assert results_markdown([row, failed]).splitlines()[2:] == [
        "| int8 PTQ | 97.21 | 97.49 | 174,976 | 160,312 | 0.272 | 0.271 | 19 | full integer |",
        "| x | - | - | - | - | - | - | - | TypeError: boom |",
    ]


def test_load_results_refuses_other_json(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('{"technique": "float32"}')
    with pytest.raises(ValueError, match=r"not a demo results\.json"):
        load_results(path)


def _paragraphs(text: str) -> set[str]:
    return {p.strip() for p in text.split("\n\n") if len(p.strip()) >= 160}


def test_docs_do_not_copy_readme_paragraphs():
    # The README links to docs/ for details; a paragraph kept in two places drifts.
    readme = _paragraphs((ROOT / "README.md").read_text())
    copies = {
        doc.name: sorted(p[:60] for p in readme & _paragraphs(doc.read_text()))
        for doc in sorted((ROOT / "docs").glob("*.md"))
    }
    assert {name: found for name, found in copies.items() if found} == {}
