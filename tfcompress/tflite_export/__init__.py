"""Keras 3 -> TFLite/LiteRT export, verified in the LiteRT interpreter.

Example:
    >>> report = tfcompress.tflite_export.export(model, "model.tflite", quantization="int8",
    ...                                          representative_data=x_train[:500])
    >>> print(report)
"""

from tfcompress.tflite_export.converter import (
    QUANTIZATION_MODES,
    convert,
    is_quantization_aware,
)
from tfcompress.tflite_export.export import ExportReport, export
from tfcompress.tflite_export.interpreter import OpInfo, TFLiteModel

__all__ = [
    "QUANTIZATION_MODES",
    "ExportReport",
    "OpInfo",
    "TFLiteModel",
    "convert",
    "export",
    "is_quantization_aware",
]
