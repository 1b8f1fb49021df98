"""Weight sharing on the suite's workloads: ``cluster_model`` (exact 1-D k-means per
kernel) on the trained model, fine-tuned with the workload's budget (the centroids
train). TFLite stores the shared values as floats, so the gain shows in the gzip
bytes; the arm's notes give the Deep Compression archive (``tfc.pack``: indices
Huffman-coded with their codebooks) in bytes."""

from __future__ import annotations

import keras

from tfcompress.bench.api import Compressed, MethodRun, register_method
from tfcompress.clustering.cluster_model import cluster_model
from tfcompress.export.archive import dumps

__all__: list[str] = []


def pack_note(model: keras.Model) -> str:
    """``tfc.pack`` bytes of ``model``, or why it cannot be packed."""
    try:
        data, _ = dumps(model)
    except (TypeError, ValueError) as error:
        return f"tfc.pack: not packable ({error})"
    return f"tfc.pack {len(data)} bytes"


@register_method(
    "kmeans_cluster",
    family="clustering",
    levels=(32, 16, 8, 4),
    quick_levels=(16, 4),
    level_name="clusters per kernel",
    applies_to=("classification", "language_model"),
    description="cluster_model: k-means weight sharing of Dense/Conv kernels (Han et al. 2016), "
    "centroids fine-tuned; float TFLite (gzip shows it), tfc.pack bytes in the notes",
)
def kmeans_cluster(model: keras.Model, run: MethodRun) -> Compressed:
    clustered = cluster_model(model, clusters=int(run.level), seed=run.seed)
    run.finetune(clustered)
    return Compressed(clustered, export=None, notes=pack_note(clustered))
