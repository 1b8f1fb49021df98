"""Weight sharing (Deep Compression stage 2): 16 shared values per kernel, packed with Huffman."""

import tempfile
from pathlib import Path

from tfcompress.clustering.cluster_model import cluster_model
from tfcompress.demo.runner import DemoContext, Technique, TechniqueResult
from tfcompress.models import train_classifier
from tfcompress.packing import pack


def _clustered(ctx: DemoContext) -> TechniqueResult:
    model = cluster_model(ctx.float_model, clusters=16)
    if ctx.epochs:  # one short pass trains the shared centroids
        train_classifier(model, ctx.data, epochs=1, learning_rate=1e-4)
    with tempfile.TemporaryDirectory() as tmp:
        stored = pack(model, Path(tmp) / "model.tfcp").bytes
    return TechniqueResult(
        model,
        note=f"16 clusters; tfc.pack {stored:,} B (TFLite stores floats)",
        stored_bytes=stored,
    )


TECHNIQUES = [Technique("clustered 16 (k-means)", _clustered, order=40)]
