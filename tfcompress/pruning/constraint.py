"""``PruningMask``: the mask that keeps a pruned weight pruned, stored with the model.

A pruned weight's constraint becomes ``PruningMask(mask, inner)``: Keras 3 optimizers
apply a variable's constraint right after its update inside the compiled train step,
so the zeros hold in every later ``fit``, with or without a pruning callback, at the
cost of one multiply per weight per step. The mask lives in a non-trainable variable
(a callback assigns new values without retracing the step) and is saved twice:

* in the layer's config (``kernel_constraint`` etc.), bit-packed and base64-encoded,
  so a ``.keras`` file, ``clone_model`` and every transform built on configs carry it;
* in the weights (``save_own_variables``), next to the pruning run's progress (steps
  counted since the pruning callback started, the last applied update, the run's
  identity), so ``keras.callbacks.BackupAndRestore`` and a ``.keras`` load restore an
  interrupted run exactly.

Keras walks an object's attributes for weights only when it is a ``KerasSaveable``; a
public base class for that does not exist, hence the import from ``keras.src``.
:func:`remove_masks` takes the masks off on purpose.
"""

from __future__ import annotations

import base64
import contextlib
import math
from typing import Any

import keras
import numpy as np

try:  # Keras' own base for objects whose state is saved with the model (see above).
    from keras.src.saving.keras_saveable import KerasSaveable
except ImportError:  # pragma: no cover - a Keras without it saves the config only
    KerasSaveable = object  # type: ignore[assignment,misc]

__all__ = [
    "PruningMask",
    "PruningProgress",
    "attach_mask",
    "constraint_attribute",
    "remove_masks",
    "strip_mask_configs",
]

# Constraint attribute of a layer for a variable whose name is the key.
_CONSTRAINT_ATTRIBUTES = {
    "kernel": ("kernel_constraint", "depthwise_constraint"),
    "depthwise_kernel": ("depthwise_constraint",),
    "pointwise_kernel": ("pointwise_constraint",),
    "embeddings": ("embeddings_constraint",),
    "bias": ("bias_constraint",),
    "gamma": ("gamma_constraint",),
    "beta": ("beta_constraint",),
}


class PruningProgress:
    """Where a pruning run stands; shared by the masks one callback drives.

    Attributes:
        step: Train steps the run has completed (counted from the callback's start).
        applied: The last step whose mask update was applied (-1: none).
        run: Identity of the callback configuration that owns the run (0: none).
    """

    def __init__(self, step: int = 0, applied: int = -1, run: int = 0):
        self.step, self.applied, self.run = int(step), int(applied), int(run)

    def as_list(self) -> list[int]:
        return [self.step, self.applied, self.run]


def _pack(mask: np.ndarray) -> str:
    return base64.b64encode(np.packbits(mask.reshape(-1) != 0).tobytes()).decode("ascii")


def _unpack(bits: str, shape: tuple[int, ...]) -> np.ndarray:
    size = math.prod(shape)
    raw = np.frombuffer(base64.b64decode(bits.encode("ascii")), np.uint8)
    if raw.size != (size + 7) // 8:
        raise ValueError(
            f"PruningMask: bits hold {raw.size} bytes, a mask of shape {shape} needs "
            f"{(size + 7) // 8}"
        )
    return np.unpackbits(raw, count=size).reshape(shape).astype(np.float32)


def _new_mask_variable(value: np.ndarray, dtype: Any = "float32") -> keras.Variable:
    # A callable initializer, not the array itself: Keras may only create variables with
    # deferred initialization inside a StatelessScope (tfc.unpack sizes a config there).
    return keras.Variable(
        lambda shape, dtype: keras.ops.convert_to_tensor(value, dtype),
        shape=value.shape,
        trainable=False,
        dtype=dtype,
        aggregation="only_first_replica",
        name="mask",
    )


@keras.saving.register_keras_serializable(package="tfcompress")
class PruningMask(keras.constraints.Constraint, KerasSaveable):
    """``w -> inner(w) * mask``: keeps pruned weights at zero after every update.

    Args:
        mask: A 0/1 ``keras.Variable`` (used as is) or an array (a non-trainable
            variable is made from it).
        inner: The constraint the weight had before (applied first), or None.
        progress: The pruning run's :class:`PruningProgress` (a fresh one if None).

    Returns:
        A constraint; ``constraint(w)`` is ``inner(w) * mask``.

    Raises:
        ValueError: From ``from_config``, when the packed bits do not fit the shape.

    Example:
        >>> layer = keras.layers.Dense(4, kernel_constraint=PruningMask(np.eye(3, 4)))
        >>> # after any optimizer step the kernel is zero off the diagonal
    """

    def __init__(self, mask: Any, inner: Any = None, progress: PruningProgress | None = None):
        if not isinstance(mask, keras.Variable):
            mask = _new_mask_variable(np.asarray(mask, np.float32))
        self.mask = mask
        self.inner = keras.constraints.get(inner) if isinstance(inner, dict) else inner
        self.progress = progress if progress is not None else PruningProgress()

    def __call__(self, w: Any) -> Any:
        if self.inner is not None:
            w = self.inner(w)
        return w * keras.ops.cast(self.mask, w.dtype)

    def value(self) -> np.ndarray:
        """The mask as a float32 NumPy array."""
        return np.asarray(keras.ops.convert_to_numpy(self.mask), np.float32)

    def get_config(self) -> dict:
        return {
            "shape": list(self.mask.shape),
            "bits": _pack(self.value()),
            "inner": None if self.inner is None else keras.constraints.serialize(self.inner),
            "progress": self.progress.as_list(),
            "dtype": keras.backend.standardize_dtype(self.mask.dtype),
        }

    @classmethod
    def from_config(cls, config: dict) -> PruningMask:
        shape = tuple(int(d) for d in config["shape"])
        progress = PruningProgress(*config.get("progress", (0, -1, 0)))
        dtype = config.get("dtype", "float32")  # configs saved before it was kept: float32
        mask = _new_mask_variable(_unpack(config["bits"], shape).astype(dtype), dtype)
        return cls(mask, config.get("inner"), progress)

    # --- saved with the weights (BackupAndRestore, .keras)
    def _obj_type(self) -> str:
        # Keras only accepts its own kinds here; "Loss" makes it walk nothing of ours.
        return "Loss"

    def save_own_variables(self, store: Any) -> None:
        store["0"] = self.value()
        store["1"] = np.asarray(self.progress.as_list(), np.int64)

    def load_own_variables(self, store: Any) -> None:
        if store is None or len(store.keys()) == 0:
            return  # saved before this weight had a mask: keep the current one
        mask = np.asarray(store["0"])
        if mask.shape != tuple(self.mask.shape):
            raise ValueError(
                f"PruningMask: the saved mask has shape {mask.shape}, this weight "
                f"{tuple(self.mask.shape)}"
            )
        self.mask.assign(mask.astype(keras.backend.standardize_dtype(self.mask.dtype)))
        step, applied, run = (int(v) for v in np.asarray(store["1"]))
        self.progress.step, self.progress.applied, self.progress.run = step, applied, run


def constraint_attribute(layer: Any, variable: Any) -> str | None:
    """The layer attribute that holds ``variable``'s constraint in the layer's config.

    None when the layer has no such attribute (a custom weight): its mask then acts
    during training but is not saved with the model.
    """
    name = str(getattr(variable, "name", "")).split("/")[-1]
    for attribute in _CONSTRAINT_ATTRIBUTES.get(name, (f"{name}_constraint",)):
        if hasattr(layer, attribute) and getattr(layer, attribute) is variable.constraint:
            return attribute
    return None


def attach_mask(model: Any, layer: Any, variable: Any, dtype: Any = None) -> PruningMask:
    """``variable``'s PruningMask, created (all ones) and set on the layer if it has none.

    The mask variable is created in the model's ``tf.distribute`` scope, so each
    replica has a copy next to the weight it constrains. Its dtype is
    ``variable``'s unless ``dtype`` says otherwise (``"uint8"``: a byte per
    weight instead of four, for masks set once, as one-shot pruning does); a
    mask that exists already is returned as it is.
    """
    if isinstance(variable.constraint, PruningMask):
        return variable.constraint
    attribute = constraint_attribute(layer, variable)
    strategy = getattr(model, "distribute_strategy", None)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        if dtype is None:  # the weight's (float32 ones converted: NumPy has no bfloat16)
            mask = _new_mask_variable(np.ones(tuple(variable.shape), np.float32), variable.dtype)
        else:
            dtype = keras.backend.standardize_dtype(dtype)
            mask = _new_mask_variable(np.ones(tuple(variable.shape), dtype), dtype)
    constraint = PruningMask(mask, variable.constraint)
    variable.constraint = constraint
    if attribute is not None:
        _set_constraint(layer, attribute, constraint)
    return constraint


def _set_constraint(layer: Any, attribute: str, value: Any) -> None:
    # A read-only property (an RNN layer forwarding its cell's constraint) keeps
    # the mask on the variable only: it acts in training but is not in the config.
    with contextlib.suppress(AttributeError):
        setattr(layer, attribute, value)


def strip_mask_configs(layer_config: dict) -> list[str]:
    """Replaces every PruningMask in a layer config by its inner constraint.

    Returns:
        The names of the attributes that held a mask (e.g. ``["kernel_constraint"]``).
    """
    stripped = []
    for key, value in list(layer_config.items()):
        if (
            key.endswith("_constraint")
            and isinstance(value, dict)
            and str(value.get("class_name", "")).endswith("PruningMask")
        ):
            layer_config[key] = value.get("config", {}).get("inner")
            stripped.append(key)
    return stripped


def _all_layers(model: Any) -> list[Any]:
    found, stack = [], [model]
    while stack:
        layer = stack.pop()
        found.append(layer)
        stack.extend(getattr(layer, "layers", None) or [])
        stack.extend(getattr(layer, "_layers", None) or [])
    unique = {id(layer): layer for layer in found}
    return list(unique.values())


def remove_masks(model: keras.Model) -> int:
    """Takes every pruning mask off ``model``: later training may regrow pruned weights.

    Pruned weights stay zero until an update moves them; the constraints the layers
    had before pruning come back, and the next ``fit`` retraces its step.

    Args:
        model: A Keras model pruned by a tfcompress callback or loaded from ``.keras``.

    Returns:
        The number of masks removed.

    Raises:
        ValueError: If ``model`` is not a Keras model or layer.

    Example:
        >>> tfc.remove_masks(model)   # then model.fit(...) trains densely
        2
    """
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(f"model must be a Keras model or layer, got {type(model).__name__}")
    removed = 0
    for layer in _all_layers(model):
        for attribute in [a for a in vars(layer) if a.endswith("_constraint")]:
            value = getattr(layer, attribute)
            if isinstance(value, PruningMask):
                _set_constraint(layer, attribute, value.inner)
    for variable in model.weights:
        if isinstance(variable.constraint, PruningMask):
            variable.constraint = variable.constraint.inner
            removed += 1
    if removed and getattr(model, "compiled", False):
        model.make_train_function(force=True)
    return removed
