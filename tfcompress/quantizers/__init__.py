"""Serializable quantizer objects (config + call) with straight-through gradients."""

from tfcompress.quantization.base import Quantizer as Quantizer
from tfcompress.quantization.binary import TTQ as TTQ
from tfcompress.quantization.binary import ApproxSign as ApproxSign
from tfcompress.quantization.binary import BinaryQuantizer as BinaryQuantizer
from tfcompress.quantization.binary import DoReFa as DoReFa
from tfcompress.quantization.binary import MagnitudeAwareSign as MagnitudeAwareSign
from tfcompress.quantization.binary import SteSign as SteSign
from tfcompress.quantization.binary import SteTern as SteTern
from tfcompress.quantization.binary import SwishSign as SwishSign
from tfcompress.quantization.irnet import IRNetSign as IRNetSign
from tfcompress.quantization.irnet import LibraPBSign as LibraPBSign
from tfcompress.quantization.learned import LSQQuantizer as LSQQuantizer
from tfcompress.quantization.learned import PACTQuantizer as PACTQuantizer
from tfcompress.quantization.lqnet import LQNetQuantizer as LQNetQuantizer
from tfcompress.quantization.registry import PRESETS as PRESETS
from tfcompress.quantization.registry import deserialize as deserialize
from tfcompress.quantization.registry import get as get
from tfcompress.quantization.registry import register_preset as register_preset
from tfcompress.quantization.registry import serialize as serialize
from tfcompress.quantization.relaxed import MirrorTanhQuantizer as MirrorTanhQuantizer
from tfcompress.quantization.relaxed import MirrorTanhSign as MirrorTanhSign
from tfcompress.quantization.uniform import MinMaxQuantizer as MinMaxQuantizer
from tfcompress.quantization.uniform import MovingAverageQuantizer as MovingAverageQuantizer

__all__ = [
    "PRESETS",
    "TTQ",
    "ApproxSign",
    "BinaryQuantizer",
    "DoReFa",
    "IRNetSign",
    "LQNetQuantizer",
    "LSQQuantizer",
    "LibraPBSign",
    "MagnitudeAwareSign",
    "MinMaxQuantizer",
    "MirrorTanhQuantizer",
    "MirrorTanhSign",
    "MovingAverageQuantizer",
    "PACTQuantizer",
    "Quantizer",
    "SteSign",
    "SteTern",
    "SwishSign",
    "deserialize",
    "get",
    "register_preset",
    "serialize",
]
