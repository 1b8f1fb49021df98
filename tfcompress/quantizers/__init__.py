# ruff: noqa: I001, RUF022  (one import and one name per line: feature branches append theirs)
"""Serializable quantizer objects (config + call) with straight-through gradients."""

from tfcompress.quantization.base import Quantizer
from tfcompress.quantization.learned import LSQQuantizer
from tfcompress.quantization.learned import PACTQuantizer
from tfcompress.quantization.registry import PRESETS
from tfcompress.quantization.registry import deserialize
from tfcompress.quantization.registry import get
from tfcompress.quantization.registry import register_preset
from tfcompress.quantization.registry import serialize
from tfcompress.quantization.uniform import MinMaxQuantizer
from tfcompress.quantization.uniform import MovingAverageQuantizer
from tfcompress.quantization.binary import TTQ
from tfcompress.quantization.binary import ApproxSign
from tfcompress.quantization.binary import BinaryQuantizer
from tfcompress.quantization.binary import DoReFa
from tfcompress.quantization.binary import MagnitudeAwareSign
from tfcompress.quantization.binary import SteSign
from tfcompress.quantization.binary import SteTern
from tfcompress.quantization.binary import SwishSign

__all__: list[str] = [
    "Quantizer",
    "LSQQuantizer",
    "PACTQuantizer",
    "PRESETS",
    "deserialize",
    "get",
    "register_preset",
    "serialize",
    "MinMaxQuantizer",
    "MovingAverageQuantizer",
    "ApproxSign",
    "BinaryQuantizer",
    "DoReFa",
    "MagnitudeAwareSign",
    "SteSign",
    "SteTern",
    "SwishSign",
    "TTQ",
]
