"""The demo plot: one colour and one marker per technique, a readable PNG."""

from __future__ import annotations

import pytest

from tfcompress.reporting.plots import plot_size_vs_accuracy, point_styles


def test_every_point_gets_its_own_colour_and_marker():
    styles = point_styles(30)
    assert len({c for c, _ in styles}) == 30
    assert len({str(m) for _, m in styles}) == 30
    assert point_styles(12) == styles[:12]


def test_too_many_points_are_refused():
    with pytest.raises(ValueError, match="between 0 and 30 points, got 31"):
        point_styles(31)


def test_plot_writes_a_png_with_one_entry_per_technique(tmp_path):
    import matplotlib.image

    points = [(f"technique {i}", 1000 * (i + 1), 0.9 + i / 200) for i in range(12)]
    points.append(("failed", None, None))  # skipped, not plotted
    path = plot_size_vs_accuracy(points, tmp_path / "plot.png")
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 400 and image.shape[1] > 800
