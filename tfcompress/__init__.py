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
    quantizers,
    reporting,
    schedules,
    tflite_export,
    transforms,
)
from tfcompress.reporting import summary

__version__ = "0.1.0"

from tfcompress.transforms import factorize_model

__all__ = [
    "__version__",
    "callbacks",
    "datasets",
    "factorize_model",
    "layers",
    "models",
    "ops",
    "quantizers",
    "reporting",
    "schedules",
    "summary",
    "tflite_export",
    "transforms",
]
