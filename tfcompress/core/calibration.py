"""Calibration data: one normaliser for every tool that feeds a model typical inputs.

int8 export, and any post-training method that needs activations, takes "a few hundred
typical inputs" in whatever form the user has them. :func:`calibration_data` turns each
accepted form into one checked, capped set of arrays in the model's own input structure:

- a NumPy array (or any array-like: ``tf.Tensor``, ``jax.Array``) for a one-input model;
- a list/tuple with one array per input, or a dict keyed like the model's inputs;
- a ``tf.data.Dataset``, a generator or any iterable of batches (each batch in one of the
  forms above, optionally as ``(x, y)`` or ``(x, y, sample_weight)``; unbatched single
  examples are accepted too);
- a zero-argument callable returning such an iterable (TFLite's ``representative_dataset``).

Every array is checked against the model's input shape before anything runs, so a wrong
shape is reported as a wrong shape (naming both), not as whatever fails downstream.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import keras
import numpy as np

__all__ = ["CalibrationData", "calibration_data", "model_input_structure"]


def model_input_structure(model: keras.Model) -> Any:
    """The model's inputs as the structure its ``call`` takes (tensor, list or dict).

    Raises:
        ValueError: If the model has no defined inputs.
    """
    structure = getattr(model, "_inputs_struct", None)  # Functional keeps dicts and nesting
    if structure is None:
        try:
            structure = list(model.inputs)
        except (AttributeError, ValueError):
            structure = None
    if structure is None or (isinstance(structure, (list, tuple, dict)) and not structure):
        raise ValueError(
            f"model {getattr(model, 'name', model)!r} has no defined inputs, so its input shape "
            "is unknown. Start it with keras.Input(shape) (Sequential/Functional), or pass "
            "input_signature=[tf.TensorSpec((None, ...), 'float32')]."
        )
    if isinstance(structure, (list, tuple)) and len(structure) == 1:
        return structure[0]
    return structure


def _is_leaf(node: Any) -> bool:
    return not isinstance(node, (Mapping, list, tuple))


def _shape(spec: Any) -> tuple:
    return tuple(None if d is None else int(d) for d in tuple(spec.shape))


def _dtype(spec: Any) -> np.dtype:
    dtype = spec.dtype
    return np.dtype(getattr(dtype, "as_numpy_dtype", dtype))


def _spec_name(spec: Any) -> str | None:
    name = getattr(spec, "name", None)
    return name if isinstance(name, str) and name else None


def _where(path: tuple) -> str:
    return "".join(f"[{p!r}]" for p in path)


def _is_array_like(value: Any) -> bool:
    return isinstance(value, np.ndarray) or (
        hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, type)
    )


@dataclasses.dataclass
class CalibrationData:
    """Checked calibration inputs in the model's input structure.

    Attributes:
        structure: The model's input structure (specs with ``shape``/``dtype``).
        arrays: One array per input, in ``keras.tree.flatten`` order of ``structure``,
            each cast to its input's dtype, all with the same number of examples.
        argument: The argument name used in error messages.
    """

    structure: Any
    arrays: list[np.ndarray]
    argument: str = "calibration_data"

    @property
    def num_samples(self) -> int:
        """How many examples there are."""
        return len(self.arrays[0])

    def flat(self, limit: int | None = None) -> list[np.ndarray]:
        """One array per input (flatten order), at most ``limit`` examples."""
        return [a[:limit] for a in self.arrays]

    def inputs(self, limit: int | None = None) -> Any:
        """The arrays in the structure the model takes (array, list or dict)."""
        return keras.tree.pack_sequence_as(self.structure, self.flat(limit))

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[list[np.ndarray]]:
        """Flat lists of arrays, ``batch_size`` examples each (the last may be smaller)."""
        n = self.num_samples if limit is None else min(limit, self.num_samples)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield [a[start:stop] for a in self.arrays]

    def input_batches(self, batch_size: int, limit: int | None = None) -> Iterator[Any]:
        """Batches in the model's input structure, ready for ``model(batch)``.

        What a post-training method iterates over to capture activations.
        """
        for part in self.batches(batch_size, limit):
            yield keras.tree.pack_sequence_as(self.structure, part)


def calibration_data(
    data: Any,
    structure: Any,
    *,
    max_samples: int | None = None,
    argument: str = "calibration_data",
    model_name: str | None = None,
) -> CalibrationData:
    """Normalises calibration inputs and checks them against the model's inputs.

    Args:
        data: Arrays, a dict/list of arrays, a ``tf.data.Dataset``, an iterable or
            generator of batches, a zero-argument callable returning one, or an
            existing :class:`CalibrationData` (re-checked and capped).
        structure: The model's inputs: a model, or the structure from
            :func:`model_input_structure` (anything with ``shape`` and ``dtype``
            leaves, e.g. ``tf.TensorSpec``).
        max_samples: Read at most this many examples (an endless dataset is fine).
        argument: The argument name to use in error messages.
        model_name: The model name to use in error messages.

    Returns:
        A :class:`CalibrationData`.

    Raises:
        TypeError: ``data`` is a string/path or of a type that is not accepted.
        ValueError: A shape that does not match the model's input shape, a missing
            dict key, non-numeric or non-finite values, or no examples at all.

    Example:
        >>> calib = calibration_data(x_train, model, max_samples=500)
        >>> calib.num_samples, calib.inputs().shape
        (500, (500, 28, 28, 1))
    """
    if isinstance(structure, keras.Model):
        model_name = model_name or structure.name
        structure = model_input_structure(structure)
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    ):
        raise ValueError(f"max_samples must be a positive integer, got {max_samples!r}")
    reader = _Reader(structure, argument, model_name)
    if isinstance(data, CalibrationData):
        data = data.inputs()
    if data is None:
        raise ValueError(f"{argument} is None: give an array of typical model inputs")
    if isinstance(data, (str, bytes, os.PathLike)):
        raise TypeError(
            f"{argument} must be model inputs (an array, a dict/list of arrays, a "
            f"tf.data.Dataset or an iterable of batches), got {type(data).__name__} {data!r}; "
            "load a file first, e.g. np.load(path)['x']"
        )
    if callable(data) and not _is_array_like(data) and not isinstance(data, Iterable):
        data = data()
    if reader.is_whole(data):
        parts = [reader.match(data, batched=True)]
    elif isinstance(data, Iterable) and not _is_array_like(data) and not isinstance(data, Mapping):
        parts = reader.read_batches(data, max_samples)
    else:
        raise TypeError(
            f"{argument} must be an array, a dict/list of arrays, a tf.data.Dataset or an "
            f"iterable of batches, got {type(data).__name__}"
        )
    arrays = [np.concatenate(column) for column in zip(*parts)] if parts else []
    if not arrays or len(arrays[0]) == 0:
        raise ValueError(f"{argument} is empty: give at least one example")
    if max_samples is not None:
        arrays = [a[:max_samples] for a in arrays]
    return CalibrationData(structure, arrays, argument)


class _Reader:
    """Matches user data against the input structure, one batch at a time."""

    def __init__(self, structure: Any, argument: str, model_name: str | None):
        self.structure = structure
        self.argument = argument
        self.model = f"model {model_name!r}" if model_name else "the model"
        self.flat_specs = keras.tree.flatten(structure)

    def is_whole(self, data: Any) -> bool:
        """True when ``data`` is the whole set of inputs rather than a stream of batches."""
        if _is_array_like(data) or isinstance(data, Mapping):
            return True
        if isinstance(data, (list, tuple)) and isinstance(self.structure, (list, tuple)):
            return len(data) == len(self.structure) and all(
                _is_array_like(d) if _is_leaf(s) else isinstance(d, (Mapping, list, tuple))
                for d, s in zip(data, self.structure)
            )
        return False

    def read_batches(self, batches: Iterable, max_samples: int | None) -> list[list[np.ndarray]]:
        parts, seen = [], 0
        for index, element in enumerate(batches):
            x = self._features(element)
            part = self.match(x, batched=None, where=f" (batch {index})")
            parts.append(part)
            seen += len(part[0])
            if max_samples is not None and seen >= max_samples:
                break
        return parts

    def _features(self, element: Any) -> Any:
        """Drops labels and sample weights from an ``(x, y[, w])`` element."""
        if not isinstance(element, tuple) or len(element) not in (2, 3):
            return element
        if _is_leaf(self.structure) or isinstance(self.structure, Mapping):
            return element[0]
        if isinstance(element[0], (Mapping, list, tuple)):
            return element[0]
        return element

    def match(self, x: Any, batched: bool | None, where: str = "") -> list[np.ndarray]:
        flat = self._flatten(x, self.structure, (), where)
        arrays = [self._check(a, s, p, batched, where) for a, s, p in flat]
        counts = {len(a) for a in arrays}
        if len(counts) > 1:
            raise ValueError(
                f"{self.argument}{where}: the inputs have different numbers of examples "
                f"({', '.join(str(len(a)) for a in arrays)}); give the same number for each"
            )
        return arrays

    def _flatten(self, x: Any, spec: Any, path: tuple, where: str) -> list[tuple]:
        if _is_leaf(spec):
            if isinstance(x, (list, tuple)) and len(x) == 1:
                x = x[0]
            if isinstance(x, (Mapping, list, tuple)):
                raise ValueError(
                    f"{self.argument}{where}{_where(path)} is a {type(x).__name__}; "
                    f"{self.model} expects one array of shape {_shape(spec)} here"
                )
            return [(x, spec, path)]
        if isinstance(spec, Mapping):
            if not isinstance(x, Mapping):
                raise ValueError(
                    f"{self.argument}{where}{_where(path)} is a {type(x).__name__}; {self.model} "
                    f"takes a dict with keys {sorted(spec)}"
                )
            missing = [k for k in spec if k not in x]
            if missing:
                raise ValueError(
                    f"{self.argument}{where}{_where(path)} has keys {sorted(x)}; {self.model} "
                    f"takes {sorted(spec)} (missing {missing})"
                )
            return [
                item
                for key in sorted(spec)
                for item in self._flatten(x[key], spec[key], (*path, key), where)
            ]
        # list/tuple of inputs: a list of the same length, or a dict keyed by input names
        if isinstance(x, Mapping):
            names = [_spec_name(s) if _is_leaf(s) else None for s in spec]
            if all(n in x for n in names if n) and all(names):
                x = [x[n] for n in names]
            else:
                raise ValueError(
                    f"{self.argument}{where}{_where(path)} has keys {sorted(x)}; {self.model} "
                    f"takes a list of {len(spec)} inputs (named {names})"
                )
        if not isinstance(x, (list, tuple)) or len(x) != len(spec):
            got = f"{len(x)} items" if isinstance(x, (list, tuple)) else type(x).__name__
            raise ValueError(
                f"{self.argument}{where}{_where(path)} has {got}; {self.model} takes "
                f"{len(spec)} inputs (shapes {[_shape(s) for s in keras.tree.flatten(spec)]})"
            )
        return [
            item
            for i, (value, sub) in enumerate(zip(x, spec))
            for item in self._flatten(value, sub, (*path, i), where)
        ]

    def _check(
        self, value: Any, spec: Any, path: tuple, batched: bool | None, where: str
    ) -> np.ndarray:
        label = f"{self.argument}{where}{_where(path)}"
        name = _spec_name(spec)
        expected = _shape(spec)
        input_label = f"input {name!r}" if name and len(self.flat_specs) > 1 else "the input"
        try:
            array = np.asarray(value)
        except Exception as error:
            raise TypeError(
                f"{label} could not be read as an array ({type(value).__name__}: {error})"
            ) from error
        if array.dtype.kind not in "biuf":
            raise TypeError(
                f"{label} has dtype {array.dtype}; {input_label} of {self.model} takes "
                f"numbers ({_dtype(spec).name})"
            )
        if batched is None and array.ndim == len(expected) - 1:
            array = array[None]  # one unbatched example, e.g. from_tensor_slices without batch
        if array.ndim != len(expected) or any(
            e is not None and e != g for e, g in zip(expected[1:], array.shape[1:])
        ):
            raise ValueError(
                f"{label} has shape {tuple(array.shape)}; {input_label} of {self.model} has "
                f"shape {expected} (first axis: examples; None: any size)"
            )
        if array.dtype.kind == "f":
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            if bad:
                raise ValueError(
                    f"{label} has {bad} NaN/Inf value(s); calibration needs finite inputs"
                )
        return array.astype(_dtype(spec), copy=False)
