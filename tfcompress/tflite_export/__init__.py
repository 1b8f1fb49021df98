"""Keras 3 -> TFLite/LiteRT export, verified in the LiteRT interpreter.

Example:
    >>> report = tfcompress.export.tflite(model, "model.tflite", quantization="int8",
    ...                                          representative_data=x_train[:500])
    >>> print(report)
"""

from tfcompress.export.converter import (
    QUANTIZATION_MODES,
    convert,
    is_quantization_aware,
)
from tfcompress.export.interpreter import OpInfo, TFLiteModel
from tfcompress.export.tflite import ExportReport, export

__all__ = [
    "QUANTIZATION_MODES",
    "ExportReport",
    "OpInfo",
    "TFLiteModel",
    "convert",
    "export",
    "is_quantization_aware",
]
