"""The suite's results as a markdown report, a README summary table and plots.

Plots: one figure per workload with two panels, quality against compression
(dense gzip bytes / arm gzip bytes) and against measured speed-up (dense LiteRT
latency / arm latency, minimum over interleaved rounds); every method has its
own colour and marker, one point per level, error bars one standard deviation
over seeds; the dense model is the black star.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tfcompress.core.io import UnreadableFileError, write_text
from tfcompress.reporting.plots import point_styles

__all__ = ["load_document", "plot_workload", "report_markdown", "summary_markdown", "write_report"]

# Quality within this of dense counts as "kept" in the summary.
TOLERANCE = {"accuracy": 0.01, "bits_per_byte": 0.05}


def load_document(path: str | Path) -> dict:
    """A suite results JSON written by ``tfcompress bench suite``.

    Raises:
        tfcompress.UnreadableFileError: Not JSON, or not a suite document.
    """
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UnreadableFileError(path, f"not JSON ({error})") from error
    if not isinstance(document, dict) or not str(document.get("schema", "")).startswith(
        "tfcompress.bench.suite/"
    ):
        raise UnreadableFileError(path, "not a tfcompress.bench.suite results document")
    return document


def _ratio(numerator: Any, denominator: Any) -> float | None:
    if not numerator or not denominator:
        return None
    return float(numerator) / float(denominator)


def _fmt(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def _quality(entry: dict, arm: dict) -> str:
    mean, std = arm.get("quality_mean"), arm.get("quality_std")
    if entry["metric"] == "none":
        return "-"
    if mean is None:
        return "failed" if arm.get("errors") else "diverged"
    if entry["metric"] == "accuracy":
        return f"{100 * mean:.1f} ± {100 * (std or 0):.1f}"
    return f"{mean:.3f} ± {(std or 0):.3f}"


def _derived(entry: dict, arm: dict) -> dict:
    dense = entry["dense"]
    latency = arm.get("latency") or {}
    return {
        "param_ratio": _ratio(dense.get("params"), arm.get("nonzero_params")),
        "gzip_ratio": _ratio(dense.get("gzip_bytes"), arm.get("gzip_bytes")),
        "macs_speedup": _ratio(dense.get("macs"), arm.get("effective_macs")),
        "latency_speedup": _ratio(1.0, latency.get("ratio_min")),
        "latency_speedup_median": _ratio(1.0, latency.get("ratio_median")),
    }


def _workload_section(entry: dict) -> list[str]:
    dense = entry["dense"]
    lines = [f"## {entry['name']}", "", entry["description"] + ".", ""]
    metric = entry["metric"]
    if metric != "none":
        quality = _quality(entry, dense)
        unit = " %" if metric == "accuracy" else ""
        lines.append(f"Dense {metric}{unit}: {quality} over {len(dense['runs'])} seeds.")
    for key, value in (entry.get("anchor") or {}).items():
        lines.append(f"Anchor: {key} = {value:.3f} on the same held-out bytes.")
    lat = dense.get("latency") or {}
    lines += [
        f"Dense: {dense.get('params'):,} parameters, {dense.get('macs'):,} MACs, "
        f"{dense.get('tflite_bytes'):,} .tflite bytes ({dense.get('gzip_bytes'):,} gzip), "
        f"LiteRT {_fmt(lat.get('min_ms'), 3)} ms min / {_fmt(lat.get('median_ms'), 3)} ms "
        "median (1 thread).",
        "",
        "| method | level | fine-tune | quality | params x | gzip x | .tflite bytes | "
        "MACs x | latency x (min / median) | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in entry["arms"]:
        d = _derived(entry, arm)
        note = "; ".join(e.split("\n")[0][:80] for e in arm.get("errors", [])) or ""
        if arm.get("verified") is False:
            note = (note + "; " if note else "") + "TFLite file not verified"
        first = next((r for r in arm["runs"] if not r.get("error")), {})
        if first.get("notes"):
            note = (note + "; " if note else "") + first["notes"]
        lines.append(
            f"| {arm['method']} | {arm['level_name']} {arm['level']} | "
            f"{'yes' if arm['finetunes'] else 'no'} | {_quality(entry, arm)} | "
            f"{_fmt(d['param_ratio'])} | {_fmt(d['gzip_ratio'])} | "
            f"{_fmt(arm.get('tflite_bytes'))} | {_fmt(d['macs_speedup'])} | "
            f"{_fmt(d['latency_speedup'])} / {_fmt(d['latency_speedup_median'])} | {note} |"
        )
    lines += ["", f"![{entry['name']}]({entry['name']}.png)", ""]
    return lines


def report_markdown(document: dict) -> str:
    """The full report: per workload, every (method, level) with all metrics."""
    machine = document.get("machine", {})
    cpu = machine.get("cpu", {})
    lines = [
        "# tfcompress benchmark suite",
        "",
        f"Configuration **{document['configuration']}**, seeds {document['seeds']}, "
        f"{document.get('seconds', 0) / 60:.1f} minutes, created {document['created']}.",
        f"Machine: {cpu.get('model')}, {machine.get('cpu_count')} cores, ISA flags "
        f"{', '.join(cpu.get('flags') or [])}; load average at start "
        f"{machine.get('load_average')}.",
        "",
        "Quality is the mean ± standard deviation over seeds (accuracy in %, or held-out "
        "bits per byte: lower is better). `params x` = dense parameters / non-zero "
        "parameters; `gzip x` = dense .tflite gzip bytes / the arm's; `MACs x` = dense MACs / "
        "MACs of the non-zero weights (theoretical speed-up); `latency x` = dense LiteRT "
        "latency / the arm's, one thread, all files of a workload timed interleaved in one "
        "run. Sizes and latency come from the first seed's file.",
        "",
    ]
    for entry in document["workloads"]:
        lines += _workload_section(entry)
    lines += ["## Sanity check: random pruning is worse than magnitude", ""]
    for check in document.get("sanity", []):
        verdict = "holds" if check["holds"] else "FAILS"
        detail = ", ".join(
            f"{row['level']}: random {_fmt(row['random'], 3)} vs magnitude "
            f"{_fmt(row['magnitude_layer'], 3)}"
            + (" (both collapsed, not compared)" if row.get("collapsed") else "")
            for row in check["levels"]
        )
        floor = check.get("context_free")
        reference = "" if floor is None else f"; context-free predictor {_fmt(floor, 3)}"
        lines.append(f"- {check['workload']}: {verdict} ({detail}{reference})")
    if any(row.get("collapsed") for c in document.get("sanity", []) for row in c["levels"]):
        lines += [
            "",
            "A level where magnitude pruning is no better than the context-free predictor "
            "(the majority class; the language model's byte frequencies) is not compared: "
            "both arms have lost what the model knew.",
        ]
    return "\n".join(lines) + "\n"


def _best_arm(entry: dict, method: str) -> dict | None:
    tolerance = TOLERANCE.get(entry["metric"])
    dense = entry["dense"].get("quality_mean")
    sign = 1.0 if entry["higher_is_better"] else -1.0
    kept = []
    for arm in entry["arms"]:
        if arm["method"] != method or arm.get("quality_mean") is None:
            continue
        ratio = _derived(entry, arm)["gzip_ratio"] or 0.0
        if tolerance is None or dense is None or sign * (arm["quality_mean"] - dense) >= -tolerance:
            kept.append((ratio, arm))
    return max(kept, key=lambda item: item[0])[1] if kept else None


def _summary_cell(entry: dict, method: str) -> str:
    """The most compressed level that keeps quality, or how much the mildest level lost."""
    arms = [a for a in entry["arms"] if a["method"] == method]
    if not arms:
        return ""
    if entry["metric"] == "none":  # latency only: the fastest file
        timed = [(_derived(entry, a)["latency_speedup"], a) for a in arms]
        timed = [(x, a) for x, a in timed if x]
        if not timed:
            return "-"
        speedup, arm = max(timed, key=lambda item: item[0])
        return f"{arm['level']}: {speedup:.2f}x faster"
    arm = _best_arm(entry, method)
    if arm is not None:
        gzip = _derived(entry, arm)["gzip_ratio"]
        return f"**{arm['level']}**, {_fmt(gzip)}x gzip"
    mildest = arms[0]
    dense, mean = entry["dense"].get("quality_mean"), mildest.get("quality_mean")
    if dense is None or mean is None:
        return f"{mildest['level']}: failed" if mildest.get("errors") else "-"
    if entry["metric"] == "accuracy":
        return f"{mildest['level']}: {100 * (mean - dense):+.1f} pt"
    return f"{mildest['level']}: {mean - dense:+.2f} bpb"


def summary_markdown(document: dict, workloads: Sequence[str] | None = None) -> str:
    """One row per method, one column per workload: what each method achieves where.

    A bold level is the most compressed one whose mean quality stays within
    1 accuracy point or 0.05 bits per byte of the dense model (with its gzip
    compression); otherwise the cell gives the mildest level's loss. Latency-only
    workloads give the fastest file's measured speed-up.
    """
    entries = [e for e in document["workloads"] if workloads is None or e["name"] in workloads]
    methods = list(dict.fromkeys(a["method"] for e in entries for a in e["arms"]))
    header = ["method"]
    for entry in entries:
        if entry["metric"] == "none":
            header.append(f"{entry['name']} (latency)")
        else:
            header.append(f"{entry['name']} ({_quality(entry, entry['dense'])})")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        cells = [_summary_cell(entry, method) for entry in entries]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_workload(entry: dict, path: str | Path) -> Path | None:
    """Quality vs compression and vs measured speed-up for one workload (PNG)."""
    if entry["metric"] == "none":
        return _plot_latency_only(entry, path)
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(a["method"] for a in entry["arms"]))
    styles = dict(zip(methods, point_styles(min(len(methods), 30))))
    scale = 100.0 if entry["metric"] == "accuracy" else 1.0
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), dpi=110)
    dense = entry["dense"]
    for ax, key, label in (
        (axes[0], "gzip_ratio", "compression (dense gzip bytes / gzip bytes)"),
        (axes[1], "latency_speedup", "measured speed-up (dense latency / latency, LiteRT)"),
    ):
        for method in methods:
            colour, marker = styles.get(method, ("grey", "o"))
            xs, ys, es = [], [], []
            for arm in entry["arms"]:
                if arm["method"] != method or arm.get("quality_mean") is None:
                    continue
                x = _derived(entry, arm)[key]
                if x is None:
                    continue
                xs.append(x)
                ys.append(scale * arm["quality_mean"])
                es.append(scale * (arm.get("quality_std") or 0.0))
            if xs:
                ax.errorbar(
                    xs,
                    ys,
                    yerr=es,
                    color=colour,
                    marker=marker,
                    linestyle="-",
                    linewidth=0.8,
                    markersize=6,
                    markerfacecolor="none",
                    label=method,
                    capsize=2,
                )
        if dense.get("quality_mean") is not None:
            ax.plot([1.0], [scale * dense["quality_mean"]], "k*", markersize=12, label="dense")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(entry["metric"] + (" (%)" if scale == 100.0 else " (lower is better)"))
        ax.grid(True, alpha=0.3)
    axes[1].legend(fontsize=7, loc="best", ncol=2)
    fig.suptitle(f"{entry['name']}: {entry['description']}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _plot_latency_only(entry: dict, path: str | Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    points = []
    for arm in entry["arms"]:
        d = _derived(entry, arm)
        if d["gzip_ratio"] and d["latency_speedup"]:
            points.append(
                (f"{arm['method']} {arm['level']}", d["gzip_ratio"], d["latency_speedup"])
            )
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    for (label, x, y), (colour, marker) in zip(points, point_styles(min(len(points), 30))):
        ax.plot(
            [x],
            [y],
            marker=marker,
            color=colour,
            linestyle="none",
            markersize=8,
            markerfacecolor="none",
            label=label,
        )
    ax.set_xscale("log")
    ax.set_xlabel("compression (dense gzip bytes / gzip bytes)")
    ax.set_ylabel("measured speed-up (LiteRT, 1 thread)")
    ax.axhline(1.0, color="k", linewidth=0.6)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"{entry['name']}: size and latency only", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(document: dict, folder: str | Path) -> dict[str, Path]:
    """Writes ``results.json``, ``report.md`` and one PNG per workload into ``folder``."""
    from tfcompress.bench.suite import to_json_ready

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {"results": folder / "results.json", "report": folder / "report.md"}
    write_text(written["results"], json.dumps(to_json_ready(document), indent=1) + "\n")
    write_text(written["report"], report_markdown(document))
    for entry in document["workloads"]:
        png = plot_workload(entry, folder / f"{entry['name']}.png")
        if png is not None:
            written[entry["name"]] = png
    return written
