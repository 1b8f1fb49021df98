"""What holds a one-shot result in an ordinary Keras model: masks, Quant layers, ranges.

* **Pruned weights** keep their layer (same class, same name) and get a
  :class:`~tfcompress.pruning.constraint.PruningMask` constraint, exactly as
  ``GradualPruning`` leaves them: a later ``fit`` keeps the zeros, and the
  mask is saved in ``.keras`` files (for layers whose config carries their
  constraint: not the projections inside ``MultiHeadAttention``, whose config
  has one constraint for all four; their zeros are saved, their mask is not).
* **Quantized weights** of ``Dense``/``Conv1D``/``Conv2D``/``DepthwiseConv2D``
  live in the ``Quant*`` layer that :func:`~tfcompress.quantize_model` puts in
  their place, with an :class:`~tfcompress.quantizers.LSQQuantizer` kernel
  quantizer whose stored step *is* the grid step. Its inference path is the
  fake-quant op over ``[-q s, q s]``, so Keras computes with exactly the
  one-shot integers times ``s``, and the TFLite converter writes those
  integers with scale ``s`` (the range no longer follows the kernel, as a
  min/max quantizer's would; a later quantization-aware fine-tune may train
  it, LSQ-style). Input and output ranges (moving-average quantizers) are set
  from the calibration data by :func:`calibrate_ranges`.
* Layers with no ``Quant*`` class (``EinsumDense``, the attention
  projections) and grids with ``group_size`` (per-group steps, which no
  quantizer or TFLite int8 tensor holds) keep float kernels whose values are
  on the grid: exact in Keras and ``.keras``, float (or re-quantized) in TFLite.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from tfcompress.core.calibration import CalibrationData
from tfcompress.core.graph_runner import GraphRunner
from tfcompress.core.walk import walk_layers
from tfcompress.oneshot.sequential import bypass_quantizers, forward
from tfcompress.pruning.constraint import attach_mask
from tfcompress.quantization.learned import LSQQuantizer
from tfcompress.quantization.quantize_model import QuantizeConfig, quantize_model
from tfcompress.quantization.scheme import QuantizeScheme, WeightRule

__all__ = [
    "FLOAT_GRID",
    "apply_mask",
    "calibrate_ranges",
    "quant_carrier_names",
    "quantized_copy",
    "set_grid_step",
]

FLOAT_GRID = "float weights on the grid"


def quant_carrier_names(model: keras.Model, names: Sequence[str], per_group: bool) -> set[str]:
    """The targets a ``Quant*`` layer will carry: the quantize scheme has a weight rule for them."""
    if per_group:
        return set()
    scheme = QuantizeScheme.default()
    found = set()
    wanted = set(names)
    for name, layer in walk_layers(model):
        rule = scheme.rule_for(layer)
        if name in wanted and isinstance(rule, WeightRule) and rule.role == "weights":
            found.add(name)
    return found


def quantized_copy(
    model: keras.Model,
    carriers: set[str],
    bits: int | dict[str, int],
    per_channel: bool,
    activations: bool = True,
) -> keras.Model:
    """``quantize_model``'s copy of ``model``: the carriers become ``Quant*`` layers.

    Their kernel quantizer is an LSQ quantizer (``bits``: one number, or
    ``{carrier name: bits}`` for mixed precision; per output channel or
    per tensor) whose step one-shot quantization sets; every other weight layer
    stays float; with ``activations``, inputs and outputs get int8 ranges as
    ``quantize_model`` places them (weight-only fake quantization otherwise).
    """
    scheme = QuantizeScheme.default()
    overrides: dict[str, Any] = {}
    for name, layer in walk_layers(model):
        rule = scheme.rule_for(layer)
        if isinstance(rule, WeightRule) and rule.role == "weights":
            if name in carriers:
                layer_bits = bits[name] if isinstance(bits, dict) else bits
                quantizer = LSQQuantizer(layer_bits, signed=True, axis=-1 if per_channel else None)
                overrides[layer.name] = {"kernel_quantizer": quantizer}
            else:
                overrides[layer.name] = None
    default_bits = max(bits.values(), default=8) if isinstance(bits, dict) else bits
    config = QuantizeConfig(weight_bits=default_bits, overrides=overrides)
    if not activations:
        config = QuantizeConfig(
            weight_bits=default_bits,
            overrides=overrides,
            activation_quantizer=None,
            input_quantizer=None,
            quantize_activation_layers=False,
        )
    with warnings.catch_warnings():
        # Layers without an int8 rule are reported by the one-shot report instead.
        warnings.filterwarnings("ignore", message="quantize_model left")
        return quantize_model(model, config)


def set_grid_step(layer: keras.layers.Layer, steps: np.ndarray) -> None:
    """Stores the one-shot grid step in a ``Quant*`` layer's LSQ kernel quantizer.

    Args:
        layer: The Quant layer.
        steps: ``(G, R)`` per output row or ``(G, 1)`` per tensor (all equal).
    """
    state = layer.quantizer_state["kernel"]
    quantizer = layer.kernel_quantizer
    if quantizer.axis is None:
        value = np.asarray(steps, np.float32).reshape(-1)[0]
    else:
        value = np.asarray(steps, np.float32).reshape(-1)
    state["step"].assign(np.asarray(value, np.float32))
    state["ready"].assign(1.0)
    # Store the kernel as the fake-quant op computes it, so that it is a fixed point.
    layer.kernel.assign(keras.ops.convert_to_numpy(layer.quantized_kernel()))


def apply_mask(model: keras.Model, layer: keras.layers.Layer, variable: Any, keep: np.ndarray):
    """Attaches (or updates) the layer's PruningMask with ``keep`` (kernel-shaped).

    A new mask is a uint8 variable (a quarter of a float32 one: on a large model
    the masks would otherwise be its weights again); an existing one keeps its dtype.
    """
    constraint = attach_mask(model, layer, variable, dtype="uint8")
    dtype = keras.backend.standardize_dtype(constraint.mask.dtype)
    constraint.mask.assign(np.asarray(keep).astype(dtype))


def calibrate_ranges(model: keras.Model, calibration: CalibrationData, batch_size: int) -> int:
    """Sets every moving-average range quantizer of ``model`` from the calibration data.

    One forward pass with all quantizers bypassed records each range
    quantizer's input ``[min, max]`` (widened to contain 0, made symmetric for
    symmetric quantizers), which becomes its stored range, as if it had been
    trained with those activations.

    Returns:
        The number of ranges set.
    """
    ranges: dict[int, Any] = {}
    runner = GraphRunner(model) if GraphRunner.supports(model) else None
    with bypass_quantizers(model, ranges):
        for batch in calibration.input_batches(batch_size):
            forward(model, batch, runner)
    for state, quantizer, low, high in ranges.values():
        low, high = min(low, 0.0), max(high, 0.0)
        if getattr(quantizer, "symmetric", False):
            high = max(-low, high)
            low = -high
        state["min"].assign(low)
        state["max"].assign(high)
        if "ready" in state:
            state["ready"].assign(1.0)
    return len(ranges)
