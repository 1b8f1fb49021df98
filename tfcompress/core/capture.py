"""Activation capture: the inputs and outputs of chosen layers, one batch at a time.

One-shot compression (calibrated quantization, pruning or factorization that
minimises the layer's output error) needs what a layer sees and produces on
real data. :func:`capture_activations` runs the model batch by batch and hands
each batch's activations to a callback, then drops them, so memory holds one
batch of activations whatever the data size (accumulate statistics such as
``X^T X`` in the callback, not the arrays).

It works by wrapping the ``call`` of the chosen layers for the duration of the
run (restored afterwards, even on error) and calling the model eagerly, so it
sees every call of a layer in Sequential, Functional, nested and subclassed
models alike, and a layer shared by two branches is reported once per call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import keras
import numpy as np

from tfcompress.core.walk import LayerSelection, layer_selector, walk_layers

__all__ = ["Captured", "capture_activations"]

_MISSING = object()


@dataclasses.dataclass(frozen=True)
class Captured:
    """What one call of a chosen layer saw and produced on one batch.

    Attributes:
        layer: The layer's qualified name (``"inner/dense"`` in a nested model).
        call: 0 for the layer's first call in the batch, 1 for the second (a
            layer shared by two branches), ...
        inputs: The first positional input as NumPy (a list/dict of arrays for
            layers such as ``Add``), or ``None`` when inputs were not asked for.
        outputs: The output as NumPy, or ``None`` when not asked for.
    """

    layer: str
    call: int
    inputs: Any
    outputs: Any


def _to_numpy(value: Any) -> Any:
    return keras.tree.map_structure(lambda t: np.asarray(keras.ops.convert_to_numpy(t)), value)


def _batches(data: Any, batch_size: int) -> Iterator[Any]:
    """Model inputs in batches: arrays (or a list/tuple of arrays, one per input) are sliced."""
    arrays = None
    if isinstance(data, np.ndarray):
        arrays = [data]
    elif isinstance(data, (list, tuple)) and data and all(isinstance(a, np.ndarray) for a in data):
        arrays = list(data)
    if arrays is not None:
        n = len(arrays[0])
        if any(len(a) != n for a in arrays):
            raise ValueError(
                f"data arrays must have the same number of examples, got {[len(a) for a in arrays]}"
            )
        for start in range(0, n, batch_size):
            chunk = [a[start : start + batch_size] for a in arrays]
            yield chunk[0] if isinstance(data, np.ndarray) else type(data)(chunk)
        return
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, dict)):
        yield from data  # a tf.data.Dataset or generator of input batches, as the model takes
        return
    raise TypeError(
        "data must be a NumPy array, a list/tuple of arrays (one per model input), or an "
        f"iterable of input batches; got {type(data).__name__}"
    )


def capture_activations(
    model: keras.Model,
    data: Any,
    layers: LayerSelection,
    callback: Callable[[list[Captured]], None],
    *,
    inputs: bool = False,
    outputs: bool = True,
    batch_size: int = 32,
    max_batches: int | None = None,
) -> int:
    """Runs ``model`` on ``data`` and streams the activations of the chosen layers.

    Args:
        model: A built Keras model (nested models are entered).
        data: Inputs only (no targets): a NumPy array, a list/tuple of arrays
            for a multi-input model (both cut into ``batch_size`` batches), or
            an iterable (``tf.data.Dataset``, generator) of input batches.
        layers: Which layers (a :data:`~tfcompress.core.walk.LayerSelection`;
            names, class names, classes or a predicate). ``None`` is refused:
            capturing every layer is rarely meant and costs memory.
        callback: Called once per batch with a list of :class:`Captured`, in
            call order. The arrays are the caller's to keep or drop.
        inputs: Capture each chosen layer's input.
        outputs: Capture each chosen layer's output.
        batch_size: Batch size for array data (> 0).
        max_batches: Stop after this many batches (``None``: all data).

    Returns:
        The number of batches run.

    Raises:
        ValueError: For ``layers=None``, a selection matching no layer, neither
            ``inputs`` nor ``outputs``, a bad ``batch_size`` or
            ``max_batches``, or arrays of unequal length.
        TypeError: For data of another kind.

    Example:
        >>> gram = {}
        >>> def accumulate(records):
        ...     for r in records:
        ...         x = r.inputs.reshape(-1, r.inputs.shape[-1])
        ...         gram[r.layer] = gram.get(r.layer, 0) + x.T @ x
        >>> capture_activations(model, x_calib, "Dense", accumulate, inputs=True, outputs=False)
    """
    if layers is None:
        raise ValueError("layers=None: name the layers to capture (names, classes or a predicate)")
    if not (inputs or outputs):
        raise ValueError("inputs=False and outputs=False: nothing to capture")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if max_batches is not None and (not isinstance(max_batches, int) or max_batches < 1):
        raise ValueError(f"max_batches must be a positive int or None, got {max_batches!r}")
    selected = layer_selector(layers, model)
    chosen = [(name, layer) for name, layer in walk_layers(model) if selected(layer)]

    records: list[Captured] = []
    calls: dict[str, int] = {}

    def wrap(name: str, layer: keras.layers.Layer) -> Callable[..., Any]:
        original = layer.call

        def call(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            index = calls.get(name, 0)
            calls[name] = index + 1
            records.append(
                Captured(
                    layer=name,
                    call=index,
                    inputs=_to_numpy(args[0]) if inputs and args else None,
                    outputs=_to_numpy(result) if outputs else None,
                )
            )
            return result

        return call

    saved = [(layer, layer.__dict__.get("call", _MISSING)) for _, layer in chosen]
    count = 0
    try:
        for name, layer in chosen:
            object.__setattr__(layer, "call", wrap(name, layer))
        for batch in _batches(data, batch_size):
            if max_batches is not None and count >= max_batches:
                break
            records.clear()
            calls.clear()
            model(batch, training=False)
            count += 1
            callback(list(records))
        records.clear()
    finally:
        for layer, previous in saved:
            if previous is _MISSING:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", previous)
    return count
