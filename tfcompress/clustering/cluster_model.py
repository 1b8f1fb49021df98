"""``cluster_model``: weight sharing for a trained model (Deep Compression stage 2)."""

from __future__ import annotations

import keras
import numpy as np

from tfcompress.clustering.kmeans import INITS, check_clusters, kmeans_1d
from tfcompress.clustering.layers import (
    ClusteredConv1D,
    ClusteredConv2D,
    ClusteredDense,
    ClusteredLayerMixin,
)
from tfcompress.core.rewrite import LayerSelection, Replacement, layer_selector, rewrite_model

__all__ = ["CLUSTERABLE", "cluster_model"]

# Exact types: a subclass (e.g. a quantized Dense) may compute its kernel differently.
CLUSTERABLE: dict[type, type] = {
    keras.layers.Dense: ClusteredDense,
    keras.layers.Conv2D: ClusteredConv2D,
    keras.layers.Conv1D: ClusteredConv1D,
}


def _cluster_kernel(
    kernel: np.ndarray, clusters: int, per_channel: bool, sparse: bool, init: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (codebook (groups, clusters), indices) for one kernel."""
    columns = [kernel[..., c] for c in range(kernel.shape[-1])] if per_channel else [kernel]
    codebook = np.zeros((len(columns), clusters), dtype=np.float32)
    indices = np.zeros(kernel.shape, dtype=np.int32)
    for g, values in enumerate(columns):
        keep = values != 0 if sparse else np.ones(values.shape, dtype=bool)
        if not keep.any():
            continue
        result = kmeans_1d(values[keep], clusters, init=init, seed=seed)
        codebook[g] = result.centroids
        labels = np.zeros(values.shape, dtype=np.int32)
        labels[keep] = result.labels + int(sparse)
        if per_channel:
            indices[..., g] = labels
        else:
            indices = labels
    return codebook, indices


def cluster_model(
    model: keras.Model,
    clusters: int = 16,
    per_channel: bool = False,
    preserve_sparsity: bool = True,
    *,
    init: str = "auto",
    layers: LayerSelection = None,
    seed: int = 0,
) -> keras.Model:
    """Copies a trained model with its Dense/Conv kernels replaced by shared values.

    Each selected kernel is clustered with exact 1-D k-means
    (:func:`tfcompress.ops.kmeans_1d`) and becomes ``codebook[indices]`` in a
    :class:`~tfcompress.layers.ClusteredDense` / ``ClusteredConv2D`` /
    ``ClusteredConv1D``. Fine-tune the copy with ``fit`` to train the
    centroids (each centroid's gradient is the sum of its weights').

    Args:
        model: A built Sequential or Functional model (nested ones too).
        clusters: Shared values per kernel (per channel with ``per_channel``),
            in [2, 65536].
        per_channel: One codebook per output channel.
        preserve_sparsity: Exact zeros (pruned weights) map to a constant zero
            that fine-tuning cannot move; the other weights are clustered.
        init: k-means initialisation (see :func:`tfcompress.clustering.kmeans.kmeans_1d`):
            ``"auto"``, ``"optimal"``, ``"cuberoot"``, ``"density"``,
            ``"linear"`` or ``"kmeans++"``.
        layers: Which layers to cluster (names, classes, a predicate); default
            every Dense, Conv1D and Conv2D. Naming a layer of another type is
            an error.
        seed: Seed for ``"kmeans++"``.

    Returns:
        A new model; ``model`` is not changed.

    Raises:
        TypeError: If ``clusters`` is not an int, or a selected layer's type
            cannot be clustered.
        ValueError: For ``clusters`` outside [2, 65536], an unknown ``init``,
            or when no layer can be clustered.

    Example:
        >>> clustered = tfc.cluster_model(model, clusters=16)
        >>> clustered.compile(...); clustered.fit(x, y, epochs=2)
    """
    clusters = check_clusters(clusters)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    explicit = layers is not None
    selected = layer_selector(layers, model)

    def replace(layer: keras.layers.Layer) -> Replacement | None:
        if not selected(layer) or not layer.weights:
            return None
        target = CLUSTERABLE.get(type(layer))
        if target is None:
            if explicit:
                raise TypeError(
                    f"layers selects {layer.name!r} of type {type(layer).__name__}, which "
                    f"cannot be clustered; supported: "
                    f"{', '.join(t.__name__ for t in CLUSTERABLE)}"
                )
            return None
        if isinstance(layer, ClusteredLayerMixin):
            return None
        kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel))
        sparse = bool(preserve_sparsity and (kernel == 0).any())
        config = layer.get_config()
        config.pop("lora_rank", None)
        config.pop("lora_alpha", None)
        new = target.from_config(
            {**config, "clusters": clusters, "per_channel": per_channel, "sparse": sparse}
        )

        def initialize(new_layer: ClusteredLayerMixin, old: keras.layers.Layer) -> None:
            codebook, indices = _cluster_kernel(kernel, clusters, per_channel, sparse, init, seed)
            new_layer.set_clusters(codebook, indices)
            if old.use_bias:
                new_layer.bias.assign(old.bias)

        return Replacement(new, initialize)

    if not explicit and not any(type(layer) in CLUSTERABLE for layer in _leaves(model)):
        raise ValueError(
            f"model {model.name!r} has no layer that can be clustered "
            f"({', '.join(t.__name__ for t in CLUSTERABLE)})"
        )
    clone, _ = rewrite_model(model, replace)
    return clone


def _leaves(model: keras.Model):
    from tfcompress.core.rewrite import iter_leaf_layers

    return [layer for _, layer in iter_leaf_layers(model)]
