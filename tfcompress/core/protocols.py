"""The duck types that layers use to join tfcompress, written down as ``typing.Protocol``.

Any layer (a user's own included) takes part in pruning, in ``tfc.summary``
and in int8 export without subclassing anything, by having the right member:

* :class:`PrunableLayer`: ``prunable_weights()`` returns the variables (or
  :class:`~tfcompress.pruning.prunable.PrunableWeight` objects) that pruning
  may zero;
* :class:`CompressionStatsLayer`: ``compression_stats()`` returns a dict with
  any of ``params``, ``bits_per_weight``, ``bytes``, ``macs`` that the summary
  uses instead of counting the layer's variables;
* :class:`QuantizationAwareLayer`: ``is_quantization_aware = True`` says the
  layer's fake-quant ops carry learned ranges, so int8 export needs no
  calibration data.

The protocols are ``runtime_checkable``: the modules that used to ask
``getattr(layer, "...")`` ask ``isinstance(layer, Protocol)`` instead, so the
rule is stated once, here. (``isinstance`` checks that the member exists; the
quantization flag must also be true, see :func:`is_quantization_aware`.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "CompressionStatsLayer",
    "PrunableLayer",
    "QuantizationAwareLayer",
    "is_quantization_aware",
]


@runtime_checkable
class PrunableLayer(Protocol):
    """A layer that lists the weights pruning may zero.

    Example:
        >>> class MyLayer(keras.layers.Layer):
        ...     def prunable_weights(self):
        ...         return [self.kernel]
        >>> isinstance(MyLayer(), PrunableLayer)
        True
    """

    def prunable_weights(self) -> Iterable[Any]:
        """Variables or ``PrunableWeight`` objects (output-channel axes included)."""
        ...


@runtime_checkable
class CompressionStatsLayer(Protocol):
    """A layer whose stored size differs from its variables' (factors, codes, packed bits)."""

    def compression_stats(self) -> Mapping[str, Any]:
        """Any of ``params``, ``bits_per_weight``, ``bytes``, ``macs`` (empty if unknown)."""
        ...


@runtime_checkable
class QuantizationAwareLayer(Protocol):
    """A layer that may carry learned quantization ranges (``Quant*`` layers)."""

    is_quantization_aware: bool


def is_quantization_aware(layer: Any) -> bool:
    """True when ``layer`` follows :class:`QuantizationAwareLayer` and its flag is set.

    Example:
        >>> is_quantization_aware(tfc.layers.QuantDense(4))
        True
    """
    return isinstance(layer, QuantizationAwareLayer) and bool(layer.is_quantization_aware)
