"""Masks enforced inside the compiled train step, without wrapper layers.

Each pruned weight gets a non-trainable 0/1 mask variable, chained into the
weight's ``constraint``: Keras 3 optimizers apply a variable's constraint right
after its update inside the compiled step, so the mask costs one multiply per
weight per step and no Python per batch. Callbacks only assign new mask values
on their schedule.

On the JAX backend the optimizer reads a mask that is not model state as a
constant of the compiled step, so there the train function is rebuilt after
each mask update (one recompilation per update: choose ``frequency``
accordingly), and weights are read and assigned after syncing the trainer's
state (see :mod:`tfcompress.core.backend_state`).

Resuming needs no extra state in checkpoints: pruned weights are exactly zero
in the model (the constraint guarantees it), so the masks are re-derived from
the zeros of the restored weights, and the step is ``optimizer.iterations``;
both are what ``BackupAndRestore`` and a ``.keras`` save restore. Derivation
waits for the first batch, after every callback's ``on_train_begin`` (so
``BackupAndRestore`` may come before or after in the list).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from tfcompress.core.backend_state import StepTracker, is_jax, sync_state
from tfcompress.pruning.masks import matrix_view
from tfcompress.pruning.prunable import LayerSelector, PrunableWeight, find_prunable

__all__ = ["MaskConstraint", "MaskedTraining", "serialize_layers"]


# Layers that map a channel that is zero everywhere to zero everywhere.
_ZERO_KEEPING = (
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.Identity,
)


def _zero_preserving(activation: Any) -> bool:
    return activation is None or getattr(activation, "__name__", None) in (
        "linear",
        "relu",
        "relu6",
    )


class MaskConstraint(keras.constraints.Constraint):
    """``w -> inner(w) * mask``: keeps pruned weights at zero after every update.

    Not serialized with the model: it lives only on the variable during ``fit``
    (the layer's own ``kernel_constraint`` config is untouched).
    """

    def __init__(self, mask: keras.Variable, inner: Any = None):
        self.mask = mask
        self.inner = inner

    def __call__(self, w):
        if self.inner is not None:
            w = self.inner(w)
        return w * keras.ops.cast(self.mask, w.dtype)


def serialize_layers(layers: LayerSelector) -> Any:
    """A config-safe form of a layer selection (names and registered classes)."""
    if layers is None or isinstance(layers, str):
        return layers
    if isinstance(layers, type):
        return {"class": keras.saving.get_registered_name(layers)}
    if callable(layers):
        raise ValueError(
            "a predicate in layers= cannot be serialized; select layers by names or classes "
            "to get a config"
        )
    return [serialize_layers(item) for item in layers]


def deserialize_layers(config: Any) -> LayerSelector:
    if config is None or isinstance(config, str):
        return config
    if isinstance(config, dict):
        name = config["class"]
        found = keras.saving.get_registered_object(name)
        if found is None:
            found = getattr(keras.layers, name.split(">")[-1], None)
        if found is None:
            raise ValueError(f"unknown layer class {name!r} in the layers config")
        return found
    return [deserialize_layers(item) for item in config]


def _mask_variable(model: keras.Model, variable: Any) -> keras.Variable:
    """A 0/1 mask for ``variable``, created where the model's variables live.

    ``fit`` calls ``on_train_begin`` outside the model's ``tf.distribute``
    strategy scope; entering it makes the mask a mirrored variable with a copy
    on every replica, next to the weight it constrains. Masks are only
    assigned from the callback (cross-replica context, which writes every
    copy); ``only_first_replica`` keeps any write from a replica consistent.
    """
    strategy = getattr(model, "distribute_strategy", None)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        return keras.Variable(
            np.ones(tuple(variable.shape), np.float32),
            trainable=False,
            dtype=variable.dtype,
            aggregation="only_first_replica",
            name=f"{variable.name}_mask",
        )


class MaskedTraining(keras.callbacks.Callback):
    """Base callback: attaches masks for the length of a ``fit`` and reports sparsity.

    Subclasses implement :meth:`initial_masks` (masks at the first batch of a
    ``fit``, given the step) and :meth:`on_step` (called before every train
    step; may call :meth:`set_masks`).

    Per-layer sparsity goes into the epoch logs as ``sparsity/<layer>`` and the
    overall sparsity of the masked weights as ``sparsity`` (TensorBoard and
    CSVLogger record them when listed after this callback).
    """

    def __init__(self, layers: LayerSelector = None, verbose: int = 0):
        super().__init__()
        self.layers = layers
        self.verbose = verbose
        self.targets: list[PrunableWeight] = []
        self.masks: list[keras.Variable] = []
        self._saved_constraints: list[Any] = []
        self._constrained: list[Any] = []
        self._synced = False
        self._sparsities: list[float] = []
        # Channel pruning also masks the bias of removed channels (and the
        # BatchNorm/depthwise channels after them), so a pruned channel is
        # exactly activation(0) or zero and shrink_model can drop it.
        self.mask_bias = False
        # (variable, its mask, target index, channel axis) for channel followers.
        self._bias_masks: list[tuple[Any, keras.Variable, int, int]] = []
        self._jax = False
        self._steps = StepTracker()

    # --- hooks for subclasses
    def validate_targets(self, targets: list[PrunableWeight]) -> None:
        """Raise before anything changes if these weights cannot be handled."""

    def initial_masks(self, step: int) -> list[np.ndarray] | None:
        """Masks at the first batch of a fit; None keeps the masks derived from zeros."""
        return None

    def on_step(self, step: int) -> None:
        """Called before the train step ``step`` (``optimizer.iterations``)."""

    # --- machinery
    def sync_state(self) -> None:
        """Puts the JAX trainer's state back into the variables (no-op on TensorFlow)."""
        sync_state(self.model)

    def weight_values(self) -> list[np.ndarray]:
        self.sync_state()
        return [np.asarray(keras.ops.convert_to_numpy(t.variable)) for t in self.targets]

    def zero_masks(self) -> list[np.ndarray]:
        """Masks that keep exactly the non-zero weights."""
        return [(w != 0).astype(np.float32) for w in self.weight_values()]

    def set_masks(self, masks: Sequence[np.ndarray]) -> None:
        """Assigns new masks and zeroes the newly pruned weights at once."""
        # On JAX, a synced trainer re-reads every variable before the next step.
        self.sync_state()
        self._sparsities = []
        for target, variable, mask in zip(self.targets, self.masks, masks):
            mask = np.asarray(mask, np.float32)
            variable.assign(mask.astype(keras.backend.standardize_dtype(variable.dtype)))
            value = np.asarray(keras.ops.convert_to_numpy(target.variable))
            target.variable.assign((value * mask).astype(value.dtype))
            self._sparsities.append(float(1.0 - mask.mean()) if mask.size else 0.0)
        for variable, follower_mask, index, axis in self._bias_masks:
            target = self.targets[index]
            keep = matrix_view(np.asarray(masks[index]), target.channel_axes).any(axis=0)
            shape = [1] * len(variable.shape)
            shape[axis] = keep.size
            full = np.broadcast_to(keep.reshape(shape), tuple(variable.shape))
            dtype = keras.backend.standardize_dtype(follower_mask.dtype)
            follower_mask.assign(full.astype(dtype))
            value = np.asarray(keras.ops.convert_to_numpy(variable))
            variable.assign((value * full).astype(value.dtype))
        if self._jax:
            # The compiled JAX step holds the masks as constants: trace anew.
            self.model.make_train_function(force=True)

    def current_step(self) -> int:
        return StepTracker.read(self.model)

    def sparsity_logs(self) -> dict[str, float]:
        """``{"sparsity": overall, "sparsity/<layer>": ...}`` for the masked weights."""
        if not self._sparsities:
            return {}
        logs: dict[str, float] = {}
        per_layer: dict[str, int] = {}
        for target in self.targets:
            per_layer[target.layer.name] = per_layer.get(target.layer.name, 0) + 1
        sizes = [int(np.prod(t.variable.shape)) for t in self.targets]
        for target, sparsity in zip(self.targets, self._sparsities):
            key = f"sparsity/{target.layer.name}"
            if per_layer[target.layer.name] > 1:
                key += f"/{target.variable.name}"
            logs[key] = sparsity
        logs["sparsity"] = float(np.dot(self._sparsities, sizes) / max(1, sum(sizes)))
        return logs

    def _channel_followers(self, target: PrunableWeight) -> list[tuple[Any, int]]:
        """Variables whose channels go with ``target``'s pruned output channels.

        ``(variable, channel axis)`` pairs: the layer's own bias, and along a
        single-consumer chain of zero-preserving per-channel layers the
        BatchNormalization scale/offset and depthwise kernel/bias of the same
        channel, so a pruned channel is exactly zero until the next layer that
        mixes channels (``shrink_model`` then removes the whole chain).
        """
        if not self.mask_bias or target.channel_axes is None:
            return []
        channels = int(np.prod([target.variable.shape[a] for a in target.channel_axes]))
        found: list[tuple[Any, int]] = []

        def take(variable: Any, axis: int = -1) -> None:
            if isinstance(variable, keras.Variable) and variable.shape[axis] == channels:
                found.append((variable, axis % len(variable.shape)))

        layer = target.layer
        bias = getattr(layer, "bias", None)
        if isinstance(bias, keras.Variable) and tuple(bias.shape) == (channels,):
            take(bias)
        if target.channel_axes != (-1,) or not _zero_preserving(getattr(layer, "activation", None)):
            return found
        while True:
            nodes = getattr(layer, "_outbound_nodes", [])
            if len(nodes) != 1:
                return found
            layer = nodes[0].operation
            if isinstance(layer, keras.layers.BatchNormalization):
                try:
                    rank = len(layer.input.shape)
                except (AttributeError, ValueError):  # no single input: leave it alone
                    return found
                if layer.gamma is None or layer.axis not in (-1, rank - 1):
                    return found
                take(layer.gamma)
                take(layer.beta)
            elif isinstance(layer, keras.layers.DepthwiseConv2D):
                if layer.depth_multiplier != 1 or not _zero_preserving(layer.activation):
                    return found
                take(layer.kernel, -2)
                take(layer.bias)
            elif isinstance(layer, keras.layers.ReLU):
                if layer.get_config().get("threshold"):
                    return found
            elif isinstance(layer, keras.layers.Activation):
                if not _zero_preserving(layer.activation):
                    return found
            elif not isinstance(layer, _ZERO_KEEPING):
                return found

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._jax = is_jax()
        targets = find_prunable(self.model, self.layers)
        self.validate_targets(targets)
        self.targets = targets
        self.masks = []
        self._saved_constraints = []
        self._bias_masks = []
        self._constrained = []
        attach: list[tuple[Any, Any]] = [(t.variable, t) for t in targets]
        taken = {id(t.variable) for t in targets}
        for index, target in enumerate(targets):
            for variable, axis in self._channel_followers(target):
                if id(variable) not in taken:  # a variable follows one target only
                    taken.add(id(variable))
                    attach.append((variable, (index, axis)))
        for variable, owner in attach:
            mask = _mask_variable(self.model, variable)
            if isinstance(owner, PrunableWeight):
                self.masks.append(mask)
            self._constrained.append(variable)
            inner = variable.constraint
            # A fit that died (no on_train_end) leaves its mask attached: drop it.
            while isinstance(inner, MaskConstraint):
                inner = inner.inner
            self._saved_constraints.append(inner)
            variable.constraint = MaskConstraint(mask, inner)
            if not isinstance(owner, PrunableWeight):
                self._bias_masks.append((variable, mask, *owner))
        # The optimizer reads constraints when the step is traced: trace anew once.
        self.model.make_train_function(force=True)
        self._synced = False

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._steps.reset()

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        step = self._steps.step(self.model, batch)
        if not self._synced:
            # After every on_train_begin: BackupAndRestore has restored weights.
            masks = self.initial_masks(step)
            self.set_masks(self.zero_masks() if masks is None else masks)
            self._synced = True
        self.on_step(step)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs.update(self.sparsity_logs())
        if self.verbose:
            overall = self.sparsity_logs().get("sparsity", 0.0)
            print(f"{type(self).__name__}: epoch {epoch + 1} sparsity {overall:.4f}")

    def on_train_end(self, logs: dict | None = None) -> None:
        # Hand the layers back as they were: a later fit without this callback
        # trains densely (the pruned weights stay zero until then).
        for variable, constraint in zip(self._constrained, self._saved_constraints):
            variable.constraint = constraint
        self._saved_constraints = []
        self.model.make_train_function(force=True)
