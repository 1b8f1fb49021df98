"""Pictures: file size against accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["plot_size_vs_accuracy"]


def plot_size_vs_accuracy(
    points: Sequence[tuple[str, float | None, float | None]],
    path: str | Path,
    title: str = "Size vs accuracy",
) -> Path:
    """Writes a scatter plot of (bytes, accuracy) points, one labelled dot each, to a PNG.

    Args:
        points: ``(label, size_in_bytes, accuracy in [0, 1])``; points with a
            missing value are skipped.
        path: Output file (.png).
        title: Plot title.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    kept = [(label, size, acc) for label, size, acc in points if size and acc is not None]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for label, size, acc in kept:
        ax.scatter(size / 1024, 100 * acc, s=40)
        ax.annotate(
            label, (size / 1024, 100 * acc), textcoords="offset points", xytext=(5, 4), fontsize=8
        )
    ax.set_xscale("log")
    ax.set_xlabel("TFLite file size (KiB, log scale)")
    ax.set_ylabel("test accuracy in TFLite (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out
