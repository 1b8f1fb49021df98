"""Pictures: file size against accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tfcompress.core.io import atomic_write

__all__ = ["plot_size_vs_accuracy", "point_styles"]

# 30 colours that stay apart (tab10, tab20's lighter shades, tab20b's darker ones)
# and 30 marker shapes (tuples are matplotlib's (sides, style, angle) polygons and
# stars): no two methods share either, up to 30 points.
_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5", "#393b79", "#637939", "#8c6d31", "#843c39",
    "#7b4173", "#5254a3", "#8ca252", "#bd9e39", "#ad494a", "#a55194",
)  # fmt: skip
_MARKERS = (
    *"osD^vP*Xhd<>p8H1234+x|_",
    (6, 1, 0), (7, 1, 0), (4, 1, 45), (8, 2, 0), (5, 2, 0), (7, 0, 0), (9, 0, 0),
)  # fmt: skip


def point_styles(n: int) -> list[tuple[str, str]]:
    """``(colour, marker)`` for ``n`` points, each pair unique in colour and in marker.

    Raises:
        ValueError: If ``n`` is negative or more than 30 (the distinct styles available).
    """
    if not 0 <= n <= len(_COLOURS):
        raise ValueError(f"n must be between 0 and {len(_COLOURS)} points, got {n}")
    return [(_COLOURS[i], _MARKERS[i]) for i in range(n)]


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
    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    for (label, size, acc), (colour, marker) in zip(kept, point_styles(len(kept))):
        # Hollow markers of distinct shapes: points at the same place stay visible one
        # over another; a legend rather than text labels, which would overprint.
        ax.scatter(
            size / 1024,
            100 * acc,
            s=70,
            marker=marker,
            facecolors="none",
            edgecolors=colour,
            linewidths=1.8,
            label=label,
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
