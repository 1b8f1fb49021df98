# ruff: noqa: I001, RUF022  (one import and one name per line: feature branches append theirs)
"""Serializable quantizer objects (config + call) with straight-through gradients."""

from tfcompress.quantizers.base import Quantizer
from tfcompress.quantizers.learned import LSQQuantizer
from tfcompress.quantizers.learned import PACTQuantizer
from tfcompress.quantizers.registry import PRESETS
from tfcompress.quantizers.registry import deserialize
from tfcompress.quantizers.registry import get
from tfcompress.quantizers.registry import register_preset
from tfcompress.quantizers.registry import serialize
from tfcompress.quantizers.uniform import MinMaxQuantizer
from tfcompress.quantizers.uniform import MovingAverageQuantizer
from tfcompress.quantizers.binary import TTQ
from tfcompress.quantizers.binary import ApproxSign
from tfcompress.quantizers.binary import BinaryQuantizer
from tfcompress.quantizers.binary import DoReFa
from tfcompress.quantizers.binary import MagnitudeAwareSign
from tfcompress.quantizers.binary import SteSign
from tfcompress.quantizers.binary import SteTern
from tfcompress.quantizers.binary import SwishSign

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
