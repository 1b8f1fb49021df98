"""Pictures: file size against accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tfcompress.core.io import atomic_write

__all__ = ["plot_size_vs_accuracy"]


def plot_size_vs_accuracy(
    points: Sequence[tuple[str, float | None, float | None]],
    path: str | Path,
    title: str = "Size vs accuracy",
    size_label: str = "TFLite file size",
) -> Path:
    """Writes a scatter plot of (bytes, accuracy) points, one labelled dot each, to a PNG.

    Args:
        points: ``(label, size_in_bytes, accuracy in [0, 1])``; points with a
            missing value are skipped.
        path: Output file (.png).
        title: Plot title.
        size_label: What the sizes are, for the x-axis label.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    kept = [(label, size, acc) for label, size, acc in points if size and acc is not None]
    markers = "osD^vP*Xh<>p"
    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    for i, (label, size, acc) in enumerate(kept):
        # A legend rather than text labels: near-equal points would overprint.
        ax.scatter(
            size / 1024, 100 * acc, s=55, marker=markers[i % len(markers)], label=label, alpha=0.85
        )
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    if kept:
        low = min(100 * acc for _, _, acc in kept)
        ax.set_ylim(max(0.0, low - 2.0), min(100.5, max(100 * a for _, _, a in kept) + 1.0))
    ax.set_xlabel(f"{size_label} (KiB, log scale)")
    ax.set_ylabel("test accuracy in TFLite (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if kept:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    out = Path(path)
    try:
        with atomic_write(out, "wb") as handle:
            fig.savefig(handle, format=out.suffix.lstrip(".").lower() or "png")
    finally:
        plt.close(fig)
    return out
