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
from tfcompress.packing import pack, unpack
from tfcompress.reporting import summary
from tfcompress.transforms.binarize import binarize_model
from tfcompress.transforms.cluster import cluster_model
from tfcompress.transforms.factorize import factorize_model
from tfcompress.transforms.prune_at_init import prune_at_init
from tfcompress.transforms.quantize import quantize_model
from tfcompress.transforms.shrink import shrink_model

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
]
