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
]
