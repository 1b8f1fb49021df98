"""Keras 3 -> TFLite/LiteRT export, verified in the LiteRT interpreter.

Example:
    >>> report = tfcompress.export.tflite(model, "model.tflite", quantization="int8",
    ...                                          representative_data=x_train[:500])
    >>> print(report)
"""

from tfcompress.export.converter import QUANTIZATION_MODES as QUANTIZATION_MODES
from tfcompress.export.converter import convert as convert
from tfcompress.export.converter import is_quantization_aware as is_quantization_aware
from tfcompress.export.interpreter import OpInfo as OpInfo
from tfcompress.export.interpreter import TFLiteModel as TFLiteModel
from tfcompress.export.tflite import ExportReport as ExportReport
from tfcompress.export.tflite import export as export

__all__ = [
    "QUANTIZATION_MODES",
    "ExportReport",
    "OpInfo",
    "TFLiteModel",
    "convert",
    "export",
    "is_quantization_aware",
]
