"""tfcompress: model compression for Keras 3 on TensorFlow.

Layers you swap in, callbacks you add to ``model.fit``, model transforms that
keep trained weights, and a TFLite/LiteRT export verified against Keras.
"""

from tfcompress import callbacks as callbacks
from tfcompress import datasets as datasets
from tfcompress import layers as layers
from tfcompress import models as models
from tfcompress import ops as ops
from tfcompress import optimizers as optimizers
from tfcompress import packing as packing
from tfcompress import quantizers as quantizers
from tfcompress import reporting as reporting
from tfcompress import schedules as schedules
from tfcompress import tflite_export as tflite_export
from tfcompress import transforms as transforms
from tfcompress.binary.binarize import binarize_model as binarize_model
from tfcompress.clustering.cluster_model import cluster_model as cluster_model
from tfcompress.lowrank.factorize import factorize_model as factorize_model
from tfcompress.packing import pack as pack
from tfcompress.packing import unpack as unpack
from tfcompress.pruning.shrink import shrink_model as shrink_model
from tfcompress.pruning.snip import prune_at_init as prune_at_init
from tfcompress.quantization.quantize_model import quantize_model as quantize_model
from tfcompress.reporting import summary as summary

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "binarize_model",
    "callbacks",
    "cluster_model",
    "datasets",
    "factorize_model",
    "layers",
    "models",
    "ops",
    "optimizers",
    "pack",
    "packing",
    "prune_at_init",
    "quantize_model",
    "quantizers",
    "reporting",
    "schedules",
    "shrink_model",
    "summary",
    "tflite_export",
    "transforms",
    "unpack",
]
