"""Masks enforced inside the compiled train step, without wrapper layers.

Each pruned weight's constraint is a :class:`tfcompress.pruning.constraint.PruningMask`:
Keras 3 optimizers apply a variable's constraint right after its update inside the
compiled step, so a mask costs one multiply per weight per step and no Python per
batch. Callbacks only assign new mask values on their schedule. The masks stay on the
model after ``fit`` (and in its ``.keras`` file) until
:func:`tfcompress.pruning.constraint.remove_masks` takes them off.

Steps are counted by the callback from its own start, never read from the optimizer:
the count, the last applied update and the run's identity are a
:class:`~tfcompress.pruning.constraint.PruningProgress` saved with each mask, so
``keras.callbacks.BackupAndRestore`` and a ``.keras`` load resume a run exactly. Masks
are attached when ``fit`` hands the model to the callbacks (``set_model``, before any
``on_train_begin``), so ``BackupAndRestore`` restores them wherever it is listed.

On the JAX backend the optimizer reads a mask that is not model state as a constant
of the compiled step, so there the train function is rebuilt after each mask update
(one recompilation per update: choose ``frequency`` accordingly), and weights are read
and assigned after syncing the trainer's state (see :mod:`tfcompress.core.backend_state`).
"""

from __future__ import annotations

import contextlib
import json
import warnings
import zlib
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from tfcompress.core.backend_state import StepTracker, is_jax, sync_state
from tfcompress.pruning.constraint import PruningMask, PruningProgress, attach_mask
from tfcompress.pruning.masks import matrix_view
from tfcompress.pruning.prunable import LayerSelector, PrunableWeight, find_prunable

__all__ = ["MaskedTraining", "deserialize_layers", "serialize_layers"]


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


def _run_identity(config: dict) -> int:
    """A non-zero 63-bit number naming a callback configuration (its run)."""
    text = json.dumps(config, sort_keys=True, default=repr)
    return (zlib.crc32(text.encode()) << 31 | zlib.adler32(text.encode())) | 1


def channel_followers(target: PrunableWeight) -> list[tuple[Any, int]]:
    """Variables whose channels go with ``target``'s pruned output channels.

    ``(variable, channel axis)`` pairs: the layer's own bias, and along a
    single-consumer chain of zero-preserving per-channel layers the
    BatchNormalization scale/offset and depthwise kernel/bias of the same
    channel, so a pruned channel is exactly zero until the next layer that
    mixes channels (``shrink_model`` then removes the whole chain).
    """
    if target.channel_axes is None:
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


class MaskedTraining(keras.callbacks.Callback):
    """Base callback: masks that stay on the model, a step count of its own, sparsity logs.

    Subclasses implement :meth:`start_run` (masks at the start of a fresh run),
    :meth:`on_step` (called before every train step with the callback's own step;
    may call :meth:`set_masks`) and :meth:`schedule_update_steps`.

    Per-layer sparsity is reported as ``sparsity/<layer>`` and the overall sparsity
    of the masked weights as ``sparsity``, through the model's metric results, so
    every callback sees them in its epoch logs (and the progress bar in its batch
    logs), wherever it is listed.
    """

    def __init__(self, layers: LayerSelector = None, verbose: int = 0):
        super().__init__()
        self.layers = layers
        self.verbose = verbose
        self.targets: list[PrunableWeight] = []
        self.constraints: list[PruningMask] = []
        self.progress = PruningProgress()
        # Channel pruning also masks the bias of removed channels (and the
        # BatchNorm/depthwise channels after them), so a pruned channel is
        # exactly activation(0) or zero and shrink_model can drop it.
        self.mask_bias = False
        # (variable, its PruningMask, target index, channel axis) for channel followers.
        self._followers: list[tuple[Any, PruningMask, int, int]] = []
        self._sparsity: dict[str, keras.Variable] = {}
        self._sizes: list[int] = []
        self._attached_to: Any = None
        self._started = False
        self._run_end: int | None = None
        self._offset = 0
        self._epoch_base = 0
        self._reporting = True
        self._jax = False

    # --- hooks for subclasses
    def validate_targets(self, targets: list[PrunableWeight]) -> None:
        """Raise before anything changes if these weights cannot be handled."""

    def validate_fit(self) -> None:
        """Raise before anything changes if this fit cannot run (missing data etc.)."""

    def resolve(self, total_steps: int | None) -> None:
        """Fix what depends on the run's length (own steps), e.g. ``end_step=None``."""

    def start_run(self) -> None:
        """Masks at the start of a fresh run (step 0); the current masks stay if not overridden."""

    def on_step(self, step: int) -> None:
        """Called before the train step ``step`` (counted from the run's start)."""

    def schedule_update_steps(self, total_steps: int) -> tuple[int, ...]:
        """The callback's own steps in ``[0, total_steps]`` at which its masks change."""
        return ()

    def run_config(self) -> dict:
        """What identifies a run: a resumed fit continues only a run of equal config."""
        try:
            with warnings.catch_warnings():  # e.g. a lambda schedule: fine for an identity
                warnings.simplefilter("ignore")
                config = dict(self.get_config())
        except Exception:  # an unserializable selection or schedule
            config = {"layers": repr(self.layers)}
        config.pop("verbose", None)
        return {"class": type(self).__name__, **config}

    # --- machinery
    def sync_state(self) -> None:
        """Puts the JAX trainer's state back into the variables (no-op on TensorFlow)."""
        sync_state(self.model)

    def weight_values(self) -> list[np.ndarray]:
        self.sync_state()
        return [np.asarray(keras.ops.convert_to_numpy(t.variable)) for t in self.targets]

    @property
    def masks(self) -> list[keras.Variable]:
        """The mask variables of the targets, in target order."""
        return [constraint.mask for constraint in self.constraints]

    def mask_values(self) -> list[np.ndarray]:
        return [constraint.value() for constraint in self.constraints]

    def zero_masks(self) -> list[np.ndarray]:
        """Masks that keep exactly the non-zero weights the current masks keep."""
        return [
            ((w != 0) & (m != 0)).astype(np.float32)
            for w, m in zip(self.weight_values(), self.mask_values())
        ]

    def set_masks(self, masks: Sequence[np.ndarray]) -> None:
        """Assigns new masks and zeroes the newly pruned weights at once."""
        # On JAX, a synced trainer re-reads every variable before the next step.
        self.sync_state()
        for target, constraint, mask in zip(self.targets, self.constraints, masks):
            mask = np.asarray(mask, np.float32)
            variable = constraint.mask
            variable.assign(mask.astype(keras.backend.standardize_dtype(variable.dtype)))
            value = np.asarray(keras.ops.convert_to_numpy(target.variable))
            target.variable.assign((value * mask).astype(value.dtype))
        for variable, follower, index, axis in self._followers:
            target = self.targets[index]
            keep = matrix_view(np.asarray(masks[index]), target.channel_axes).any(axis=0)
            shape = [1] * len(variable.shape)
            shape[axis] = keep.size
            full = np.broadcast_to(keep.reshape(shape), tuple(variable.shape))
            follower.mask.assign(full.astype(keras.backend.standardize_dtype(follower.mask.dtype)))
            value = np.asarray(keras.ops.convert_to_numpy(variable))
            variable.assign((value * full).astype(value.dtype))
        self._report_sparsity()
        if self._jax:
            # The compiled JAX step holds the masks as constants: trace anew.
            self.model.make_train_function(force=True)

    def _report_sparsity(self) -> None:
        values = [float(1.0 - m.mean()) if m.size else 0.0 for m in self.mask_values()]
        logs = self._logs_from(values)
        for key, value in logs.items():
            self._sparsity[key].assign(value)

    def _logs_from(self, sparsities: Sequence[float]) -> dict[str, float]:
        per_layer: dict[str, int] = {}
        for target in self.targets:
            per_layer[target.layer.name] = per_layer.get(target.layer.name, 0) + 1
        logs: dict[str, float] = {}
        for target, sparsity in zip(self.targets, sparsities):
            key = f"sparsity/{target.layer.name}"
            if per_layer[target.layer.name] > 1:
                key += f"/{target.variable.name}"
            logs[key] = sparsity
        logs["sparsity"] = float(np.dot(sparsities, self._sizes) / max(1, sum(self._sizes)))
        return logs

    def sparsity_logs(self) -> dict[str, float]:
        """``{"sparsity": overall, "sparsity/<layer>": ...}`` for the masked weights."""
        if not self.targets:
            return {}
        return self._logs_from(
            [float(1.0 - m.mean()) if m.size else 0.0 for m in self.mask_values()]
        )

    def _channel_followers(self, target: PrunableWeight) -> list[tuple[Any, int]]:
        """Variables whose channels go with ``target``'s (see :func:`channel_followers`)."""
        return channel_followers(target) if self.mask_bias else []

    # --- attaching (set_model: before any on_train_begin, so BackupAndRestore restores us)
    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        if self._attached_to is not model:
            self._attach(model)

    def find_targets(self, model: keras.Model) -> list[PrunableWeight]:
        """The weights this callback masks (default: the selection's prunable weights)."""
        return find_prunable(model, self.layers)

    def _attach(self, model: keras.Model) -> None:
        targets = self.find_targets(model)
        self.validate_targets(targets)
        self.validate_fit()
        attach: list[tuple[Any, Any, Any]] = [(t.variable, t.layer, t) for t in targets]
        taken = {id(t.variable) for t in targets}
        self.targets = targets
        for index, target in enumerate(targets):
            for variable, axis in self._channel_followers(target):
                if id(variable) not in taken:  # a variable follows one target only
                    taken.add(id(variable))
                    attach.append((variable, self._owner(model, variable), (index, axis)))
        self.constraints, self._followers = [], []
        for variable, layer, owner in attach:
            constraint = attach_mask(model, layer, variable)
            if isinstance(owner, PrunableWeight):
                self.constraints.append(constraint)
            else:
                self._followers.append((variable, constraint, *owner))
        self._sizes = [int(np.prod(t.variable.shape)) for t in targets]
        strategy = getattr(model, "distribute_strategy", None)
        scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
        with scope:
            self._sparsity = {
                key: keras.Variable(
                    value, trainable=False, dtype="float32", aggregation="only_first_replica"
                )
                for key, value in self.sparsity_logs().items()
            }
        self._attached_to = model

    @staticmethod
    def _owner(model: keras.Model, variable: Any) -> Any:
        return owner_of(model, variable)

    # --- reporting through the model's metric results
    def _install_metrics(self) -> None:
        model = self.model
        previous = vars(model).get("get_metrics_result")
        if getattr(previous, "_tfc_owner", None) is self:
            previous = previous._tfc_previous  # left behind by a fit that died

        def get_metrics_result():
            # The inner function is read at call time: another callback's wrapper below this
            # one may unlink itself first (callbacks end in order, not in reverse).
            inner = get_metrics_result._tfc_previous
            result = inner() if inner is not None else type(model).get_metrics_result(model)
            if self._reporting and self._sparsity:
                for key, variable in self._sparsity.items():
                    # A read (copy), not the variable: with several workers Keras all-reduces
                    # every log with tf.distribute, which takes tensors only.
                    value = keras.ops.copy(variable)
                    with contextlib.suppress(Exception):  # traced: stays a tensor (as Keras does)
                        value = float(value)
                    result[key] = value
            return result

        get_metrics_result._tfc_owner = self
        get_metrics_result._tfc_previous = previous
        model.get_metrics_result = get_metrics_result

    def _uninstall_metrics(self) -> None:
        """Unlinks this callback's wrapper wherever it is in the chain of wrappers."""
        model = self.model
        outer, current = None, vars(model).get("get_metrics_result")
        while current is not None and getattr(current, "_tfc_owner", None) is not self:
            outer, current = current, getattr(current, "_tfc_previous", None)
        if current is None:
            return
        if outer is not None:
            outer._tfc_previous = current._tfc_previous
        elif current._tfc_previous is None:
            del vars(model)["get_metrics_result"]
        else:
            model.get_metrics_result = current._tfc_previous

    # --- the run
    def on_train_begin(self, logs: dict | None = None) -> None:
        self._jax = is_jax()
        self.validate_fit()
        self._started = False
        self._reporting = True
        self._install_metrics()
        # The optimizer reads constraints, and the step its metric results, when the
        # step is traced: trace anew once per fit.
        self.model.make_train_function(force=True)

    def _start(self, epoch: int) -> None:
        """Reads or starts the run's progress (after every on_train_begin)."""
        run = _run_identity(self.run_config())
        stored = {(c.progress.step, c.progress.applied, c.progress.run) for c in self.constraints}
        resumed = len(stored) == 1 and next(iter(stored))[2] == run
        step, applied, _ = next(iter(stored)) if resumed else (0, -1, run)
        self.progress = PruningProgress(step, applied, run)
        for constraint in self.constraints + [f[1] for f in self._followers]:
            constraint.progress = self.progress
        epochs, steps = self.params.get("epochs"), self.params.get("steps")
        remaining = (epochs - epoch) * steps if epochs and steps else None
        self._run_end = None if remaining is None else step + remaining
        self.resolve(self._run_end)
        self._offset = StepTracker.read(self.model) - step
        self._started = True
        if not resumed:
            self.start_run()
        self._report_sparsity()

    def mask_update_steps(self, total_steps: int) -> tuple[int, ...]:
        """Optimizer steps in ``(0, total_steps]`` at which this callback changes masks.

        The :class:`tfcompress.core.mask_updates.MaskUpdater` protocol, for
        ``LearningRateRewinding``: the callback's own update steps, shifted to the
        optimizer's count. Available once the fit has started (its first epoch).

        Raises:
            ValueError: Before the callback's fit has started.
        """
        if not self._started:
            raise ValueError(
                f"{type(self).__name__}.mask_update_steps is known once its fit has started; "
                "pass this callback to the same model.fit"
            )
        own = self.schedule_update_steps(total_steps - self._offset)
        return tuple(s + self._offset for s in own if 0 < s + self._offset <= total_steps)

    def _advance(self, step: int) -> None:
        if step > self.progress.applied:
            self.on_step(step)
            self.progress.applied = step

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if not self._started:
            self._start(epoch)
        self._epoch_base = self.progress.step

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        step = self._epoch_base + batch
        self._advance(step)
        self.progress.step = step + 1

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.progress.step = self._epoch_base + batch + 1
        if self._run_end is not None and self.progress.step >= self._run_end:
            # An update due after the fit's last step (e.g. end_step = the run's
            # length) is applied now, before the epoch's logs and checkpoints.
            self._advance(self.progress.step)

    def on_test_begin(self, logs: dict | None = None) -> None:
        self._reporting = False  # no val_sparsity: validation does not change masks

    def on_test_end(self, logs: dict | None = None) -> None:
        self._reporting = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs.update(self.sparsity_logs())
        if self.verbose:
            overall = self.sparsity_logs().get("sparsity", 0.0)
            print(f"{type(self).__name__}: epoch {epoch + 1} sparsity {overall:.4f}")

    def on_train_end(self, logs: dict | None = None) -> None:
        # A fit that stopped early still leaves at its schedule's value.
        if self._started:
            self._advance(self.progress.step)
        self._uninstall_metrics()
        # The masks stay (PruningMask); the metric results go back to the model's own.
        self.model.make_train_function(force=True)


def owner_of(model: keras.Model, variable: Any) -> Any:
    """The layer of ``model`` (nested models entered) that holds ``variable``, or None."""
    for layer in _layers_of(model):
        if any(w is variable for w in layer.weights):
            return layer
    return None


def _layers_of(model: Any) -> list[Any]:
    found, stack = [], [model]
    while stack:
        layer = stack.pop()
        found.append(layer)
        stack.extend(getattr(layer, "layers", None) or [])
    return found
