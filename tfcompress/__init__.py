# ruff: noqa: RUF022  (one import and one name per line: feature branches append theirs)
"""tfcompress: model compression for Keras 3 on TensorFlow.

Layers you swap in, callbacks you add to ``model.fit``, model transforms that
keep trained weights, and a TFLite/LiteRT export verified against Keras.
"""

from tfcompress import (
    callbacks,
    datasets,
    layers,
    models,
    ops,
    optimizers,
    packing,
    quantizers,
    reporting,
    schedules,
    tflite_export,
    transforms,
)
from tfcompress.binary.binarize import binarize_model
from tfcompress.clustering.cluster_model import cluster_model
from tfcompress.lowrank.factorize import factorize_model
from tfcompress.packing import pack, unpack
from tfcompress.pruning.constraint import remove_masks
from tfcompress.pruning.shrink import shrink_model
from tfcompress.pruning.snip import prune_at_init
from tfcompress.quantization.quantize_model import quantize_model
from tfcompress.reporting import summary

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "callbacks",
    "datasets",
    "factorize_model",
    "layers",
    "models",
    "ops",
    "prune_at_init",
    "quantize_model",
    "quantizers",
    "reporting",
    "schedules",
    "shrink_model",
    "summary",
    "tflite_export",
    "transforms",
    "binarize_model",
    "optimizers",
    "packing",
    "pack",
    "unpack",
    "cluster_model",
    "remove_masks",
]
