"""The README's benchmark table is the committed suite run's, not a hand-kept copy.

``docs/bench/results.json`` is the ``results.json`` of one ``python3 run.py bench
suite`` run (``report.md`` and the plots beside it). The README's table between the
bench-summary markers must be exactly ``tfcompress bench report
docs/bench/results.json --summary``; the run must cover every workload and every
method where it applies, without failed arms, and pass the random-vs-magnitude check.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tfcompress.bench import list_methods
from tfcompress.bench.report import load_document, summary_markdown
from tfcompress.bench.workloads import list_workloads

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "bench" / "results.json"
BEGIN, END = "<!-- bench-summary:begin", "<!-- bench-summary:end -->"


@pytest.fixture(scope="module")
def document():
    return load_document(RESULTS)


def _region(text: str) -> str:
    assert text.count(BEGIN) == 1 and text.count(END) == 1, "one bench-summary marker pair expected"
    start = text.index("\n", text.index(BEGIN)) + 1
    return text[start : text.index(END)]


def test_readme_summary_is_generated_from_the_committed_run(document):
    assert _region((ROOT / "README.md").read_text()) == summary_markdown(document), (
        "README.md's benchmark table differs from docs/bench/results.json; paste "
        "`tfcompress bench report docs/bench/results.json --summary` between the markers"
    )


def test_readme_plots_and_report_of_the_run_exist():
    readme = (ROOT / "README.md").read_text()
    plots = re.findall(r"\]\((docs/bench/[\w.-]+\.png)\)", readme)
    assert plots, "the README shows at least one plot of the suite run"
    for plot in [*plots, "docs/bench/report.md"]:
        assert (ROOT / plot).stat().st_size > 1000, plot


def test_committed_run_covers_every_workload_and_method(document):
    assert document["configuration"] in ("quick", "full")
    ran = {w["name"]: {a["method"] for a in w["arms"]} for w in document["workloads"]}
    workloads = list_workloads(quick=document["configuration"] == "quick")
    assert sorted(ran) == sorted(w.name for w in workloads)
    for workload in workloads:
        expected = {m.name for m in list_methods() if m.applies(workload)}
        assert ran[workload.name] == expected, workload.name


def test_committed_run_has_no_failed_arm_and_passes_the_sanity_check(document):
    failed = [
        (w["name"], a["method"], a["level"], a["errors"])
        for w in document["workloads"]
        for a in w["arms"]
        if a.get("errors")
    ]
    assert failed == []
    assert document["sanity"] and all(check["holds"] for check in document["sanity"])
