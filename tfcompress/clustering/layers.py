"""Clustered (weight-shared) layers: every kernel entry is a codebook value.

``kernel = table[cluster_indices]`` where ``table`` is the trainable codebook,
preceded by a constant 0.0 when the layer is ``sparse`` (index 0 then means a
pruned weight, which stays exactly zero through fine-tuning). The gather's
gradient sums the gradients of all weights that share a centroid into that
centroid, which is Deep Compression's "trained quantization" update.

The layers subclass the Keras layer they replace and reuse its ``build`` and
``call``: only the kernel variable is swapped for ``codebook`` +
``cluster_indices``, so every constructor argument keeps its meaning.

References:
    Han, Mao, Dally. Deep Compression: Compressing Deep Neural Networks with
    Pruning, Trained Quantization and Huffman Coding. ICLR 2016.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

from tfcompress.clustering.kmeans import MAX_CLUSTERS

__all__ = ["ClusteredConv1D", "ClusteredConv2D", "ClusteredDense", "ClusteredLayerMixin"]


def _index_initializer(width: int):
    def init(shape, dtype=None):
        size = math.prod(shape)
        return ops.cast(ops.reshape(ops.arange(size) % width, shape), dtype or "int32")

    return init


class ClusteredLayerMixin:
    """Swaps a layer's ``kernel`` variable for a codebook and per-weight indices.

    Args (in addition to the base layer's):
        clusters: Number of trainable centroids, in [2, 65536].
        per_channel: One codebook per output channel (last kernel axis).
        sparse: Reserve index 0 for a constant zero (pruned weights).
    """

    def __init__(
        self,
        *args: Any,
        clusters: int = 16,
        per_channel: bool = False,
        sparse: bool = False,
        **kwargs: Any,
    ):
        if isinstance(clusters, bool) or not isinstance(clusters, (int, np.integer)):
            raise TypeError(f"clusters must be an int, got {clusters!r}")
        if not 2 <= clusters <= MAX_CLUSTERS:
            raise ValueError(f"clusters must be in [2, {MAX_CLUSTERS}], got {clusters}")
        if kwargs.get("lora_rank"):
            raise ValueError("lora_rank is not supported by clustered layers")
        super().__init__(*args, **kwargs)
        self.clusters = int(clusters)
        self.per_channel = bool(per_channel)
        self.sparse = bool(sparse)

    @property
    def table_width(self) -> int:
        """Entries per codebook table (clusters, plus the zero when sparse)."""
        return self.clusters + int(self.sparse)

    def add_weight(self, *args: Any, **kwargs: Any):
        if kwargs.get("name") != "kernel":
            return super().add_weight(*args, **kwargs)
        shape = tuple(int(d) for d in kwargs["shape"])
        self._kernel_shape = shape
        groups = shape[-1] if self.per_channel else 1
        self.codebook = super().add_weight(
            name="codebook",
            shape=(groups * self.clusters,),
            initializer=keras.initializers.RandomUniform(-0.05, 0.05),
            trainable=True,
        )
        self.cluster_indices = super().add_weight(
            name="cluster_indices",
            shape=shape,
            initializer=_index_initializer(self.table_width),
            dtype="int32",
            trainable=False,
        )
        return None

    @property
    def kernel(self):
        if not self.built:
            raise AttributeError("You must build the layer before accessing `kernel`.")
        groups = self._kernel_shape[-1] if self.per_channel else 1
        table = ops.reshape(self.codebook, (groups, self.clusters))
        if self.sparse:
            table = ops.concatenate([ops.zeros((groups, 1), dtype=table.dtype), table], axis=1)
        indices = self.cluster_indices
        if self.per_channel:
            indices = indices + ops.arange(groups, dtype="int32") * self.table_width
        return ops.take(ops.reshape(table, (-1,)), indices)

    def set_clusters(self, codebook: np.ndarray, indices: np.ndarray) -> None:
        """Sets the codebook (``(groups, clusters)``) and indices (kernel-shaped)."""
        groups = self._kernel_shape[-1] if self.per_channel else 1
        codebook = np.asarray(codebook, dtype=np.float32).reshape(-1)
        indices = np.asarray(indices)
        if codebook.size != groups * self.clusters:
            raise ValueError(
                f"codebook must have {groups * self.clusters} values, got {codebook.size}"
            )
        if indices.shape != self._kernel_shape:
            raise ValueError(f"indices must have shape {self._kernel_shape}, got {indices.shape}")
        if indices.size and (indices.min() < 0 or indices.max() >= self.table_width):
            raise ValueError(f"indices must be in [0, {self.table_width})")
        self.codebook.assign(codebook)
        self.cluster_indices.assign(indices.astype(np.int32))

    def check_indices(self) -> None:
        """Raises ValueError if an index is outside the codebook table."""
        idx = np.asarray(keras.ops.convert_to_numpy(self.cluster_indices))
        if idx.size and (idx.min() < 0 or idx.max() >= self.table_width):
            raise ValueError(
                f"layer {self.name!r}: cluster indices span [{idx.min()}, {idx.max()}], "
                f"outside the codebook table [0, {self.table_width})"
            )

    def compression_stats(self) -> dict[str, float]:
        """Stored as ceil(log2(table width)) bits per weight + float32 codebook + bias."""
        bits = max(1, math.ceil(math.log2(self.table_width)))
        weights = math.prod(self._kernel_shape)
        others = sum(math.prod(v.shape) * 4 for v in self.weights if v is not self.cluster_indices)
        return {
            "bits_per_weight": float(bits),
            "params": weights
            + sum(math.prod(v.shape) for v in self.weights)
            - math.prod(self.cluster_indices.shape),
            "bytes": weights * bits / 8 + others,
        }

    # The base layers serialize a computed kernel; store our own variables instead.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(clusters=self.clusters, per_channel=self.per_channel, sparse=self.sparse)
        return config


@keras.saving.register_keras_serializable(package="tfcompress")
class ClusteredDense(ClusteredLayerMixin, keras.layers.Dense):
    """A ``keras.layers.Dense`` whose kernel is ``codebook[cluster_indices]``.

    Args:
        units: As in ``keras.layers.Dense`` (every Dense argument is accepted).
        clusters: Number of shared values per codebook, in [2, 65536].
        per_channel: One codebook per output unit.
        sparse: Index 0 is a constant zero (pruned weights stay zero).
        **kwargs: Other ``keras.layers.Dense`` arguments.

    Returns:
        A layer; call it like Dense.

    Raises:
        ValueError: For ``clusters`` outside [2, 65536] or ``lora_rank``.

    Example:
        >>> layer = ClusteredDense(10, clusters=16)
        >>> y = layer(np.zeros((2, 4), "float32"))
    """


@keras.saving.register_keras_serializable(package="tfcompress")
class ClusteredConv2D(ClusteredLayerMixin, keras.layers.Conv2D):
    """A ``keras.layers.Conv2D`` whose kernel is ``codebook[cluster_indices]``.

    Args:
        filters: As in ``keras.layers.Conv2D`` (every Conv2D argument is accepted).
        kernel_size: As in ``keras.layers.Conv2D``.
        clusters: Number of shared values per codebook, in [2, 65536].
        per_channel: One codebook per output filter.
        sparse: Index 0 is a constant zero (pruned weights stay zero).
        **kwargs: Other ``keras.layers.Conv2D`` arguments.

    Returns:
        A layer; call it like Conv2D.

    Raises:
        ValueError: For ``clusters`` outside [2, 65536].

    Example:
        >>> layer = ClusteredConv2D(8, 3, clusters=16)
    """


@keras.saving.register_keras_serializable(package="tfcompress")
class ClusteredConv1D(ClusteredLayerMixin, keras.layers.Conv1D):
    """A ``keras.layers.Conv1D`` whose kernel is ``codebook[cluster_indices]``.

    Args:
        filters: As in ``keras.layers.Conv1D`` (every Conv1D argument is accepted).
        kernel_size: As in ``keras.layers.Conv1D``.
        clusters: Number of shared values per codebook, in [2, 65536].
        per_channel: One codebook per output filter.
        sparse: Index 0 is a constant zero (pruned weights stay zero).
        **kwargs: Other ``keras.layers.Conv1D`` arguments.

    Returns:
        A layer; call it like Conv1D.

    Raises:
        ValueError: For ``clusters`` outside [2, 65536].

    Example:
        >>> layer = ClusteredConv1D(8, 3, clusters=16)
    """
