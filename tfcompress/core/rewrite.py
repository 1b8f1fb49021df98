"""The shared machinery of model -> model transforms.

Every transform (quantize, binarize, factorize, cluster, ...) does the same
three things: pick layers, decide a replacement for each, and build a copy of
the model with the replacements wired in and every other weight kept. This
module does those things once:

* :func:`layer_selector` (from :mod:`tfcompress.core.walk`) turns ``layers=``
  into a predicate, and says clearly when a selection matches nothing;
* :func:`rewrite_model` asks ``replace(layer)`` for every leaf layer **before**
  building anything (so a bad layer raises with the user's model untouched),
  clones the model with :func:`keras.models.clone_model` (Sequential,
  Functional and nested models), copies the weights of kept layers, and lets
  each replacement initialise itself from the layer it replaces.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras

# Re-exported: rewrites walk and select layers the one way every technique does.
from tfcompress.core.walk import LayerSelection, layer_selector
from tfcompress.core.walk import walk_layers as iter_leaf_layers

__all__ = [
    "LayerSelection",
    "Replacement",
    "RewriteLog",
    "iter_leaf_layers",
    "layer_selector",
    "rewrite_model",
]


@dataclasses.dataclass
class Replacement:
    """What ``replace(layer)`` returns for a layer it changes.

    Attributes:
        layer: The new, unbuilt layer (it keeps the old layer's name unless
            the transform says otherwise).
        initialize: Called as ``initialize(new_layer, old_layer)`` once the new
            layer is built inside the copy, to set its weights from the old
            layer's (e.g. copy the kernel, or compute SVD factors).
    """

    layer: keras.layers.Layer
    initialize: Callable[[keras.layers.Layer, keras.layers.Layer], None] | None = None


@dataclasses.dataclass
class RewriteLog:
    """Which layers a transform replaced and which it left as they were, and why."""

    replaced: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    skipped: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        lines = [f"replaced {len(self.replaced)} layer(s):"]
        lines += [f"  {name}: {old} -> {new}" for name, old, new in self.replaced]
        if self.skipped:
            lines.append(f"left {len(self.skipped)} layer(s) as they were:")
            lines += [f"  {name} ({kind}): {why}" for name, kind, why in self.skipped]
        return "\n".join(lines)


def _check_cloneable(model: keras.Model) -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    if not model.built:
        raise ValueError(
            f"model {model.name!r} is not built; build it (keras.Input or a call on data) first"
        )
    is_graph = (
        isinstance(model, keras.Sequential)
        or type(model).__name__ == "Functional"
        or (hasattr(model, "_nodes_by_depth") and hasattr(model, "inputs"))
    )
    if not is_graph:
        raise TypeError(
            f"model {model.name!r} is a subclassed {type(model).__name__}; transforms rebuild "
            "Sequential and Functional models (nested ones included). Swap tfcompress layers "
            "into the subclass's __init__ by hand instead."
        )


def rewrite_model(
    model: keras.Model,
    replace: Callable[[keras.layers.Layer], Replacement | None],
    *,
    name: str | None = None,
    call_function: Callable[..., object] | None = None,
) -> tuple[keras.Model, RewriteLog]:
    """Copies ``model`` with some layers replaced; every other weight is kept.

    ``replace`` is called on every leaf layer first, before anything is built:
    it returns a :class:`Replacement`, or ``None`` to keep the layer (a copy
    of it, with the same weights). It may raise to refuse the whole rewrite;
    the user's model is never modified.

    Args:
        model: A built Sequential or Functional model (nested models are
            entered).
        replace: The per-layer decision.
        name: Name of the copy (default: the original's).
        call_function: ``keras.models.clone_model``'s hook,
            ``call_function(layer, *args, **kwargs) -> outputs``, to insert
            layers after a call or to skip a layer (return its input); a
            Sequential model is rebuilt as a Functional one for it. A layer
            the hook never calls is left out of the copy.

    Returns:
        ``(new_model, log)``.

    Raises:
        TypeError: For subclassed models.
    """
    _check_cloneable(model)
    decisions: dict[int, Replacement | None] = {}
    log = RewriteLog()
    for qualified, layer in iter_leaf_layers(model):
        if id(layer) in decisions:
            continue
        decision = replace(layer)
        decisions[id(layer)] = decision
        if decision is not None:
            log.replaced.append((qualified, type(layer).__name__, type(decision.layer).__name__))

    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer, Replacement | None]] = []

    def clone_function(layer: keras.layers.Layer) -> keras.layers.Layer:
        decision = decisions.get(id(layer))
        new = (
            decision.layer
            if decision is not None
            else layer.__class__.from_config(layer.get_config())
        )
        pairs.append((layer, new, decision))
        return new

    source, inputs = model, None
    if call_function is not None:
        if isinstance(model, keras.Sequential):
            source = keras.Model(model.inputs, model.outputs, name=model.name)
        # clone_model makes new inputs for a call hook: keep their names (export signatures)
        inputs = keras.tree.map_structure(
            lambda t: keras.Input(
                batch_shape=t.shape, dtype=t.dtype, name=t._keras_history.operation.name
            ),
            source.input,
        )
    clone = keras.models.clone_model(
        source,
        input_tensors=inputs,
        clone_function=clone_function,
        call_function=call_function,
        recursive=True,
    )
    for old, new, decision in pairs:
        if call_function is not None and isinstance(new, keras.layers.Layer) and not new.built:
            continue  # skipped by the call hook
        if decision is None:
            # Keras operation nodes (``x[:, 0]`` -> GetItem, ``ops.mean``) have no weights.
            if isinstance(old, keras.layers.Layer):
                new.set_weights(old.get_weights())
        elif decision.initialize is not None:
            decision.initialize(new, old)
    if name is not None:
        clone.name = name
    return clone, log
