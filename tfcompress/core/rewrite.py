"""The shared machinery of model -> model transforms.

Every transform (quantize, binarize, factorize, cluster, ...) does the same
three things: pick layers, decide a replacement for each, and build a copy of
the model with the replacements wired in and every other weight kept. This
module does those things once:

* :func:`layer_selector` turns ``layers=`` (names, types, a predicate) into a
  predicate, and says clearly when a selection matches nothing;
* :func:`rewrite_model` asks ``replace(layer)`` for every leaf layer **before**
  building anything (so a bad layer raises with the user's model untouched),
  clones the model with :func:`keras.models.clone_model` (Sequential,
  Functional and nested models), copies the weights of kept layers, and lets
  each replacement initialise itself from the layer it replaces.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence

import keras

__all__ = [
    "LayerSelection",
    "Replacement",
    "RewriteLog",
    "iter_leaf_layers",
    "layer_selector",
    "rewrite_model",
]

LayerSelection = str | type | Callable[[keras.layers.Layer], bool] | Sequence[str | type] | None


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


def iter_leaf_layers(
    model: keras.Model, prefix: str = ""
) -> Iterator[tuple[str, keras.layers.Layer]]:
    """Yields ``(qualified name, layer)`` for every non-model layer, entering nested models."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from iter_leaf_layers(layer, f"{prefix}{layer.name}/")
        else:
            yield f"{prefix}{layer.name}", layer


def layer_selector(
    layers: LayerSelection, model: keras.Model | None = None, argument: str = "layers"
) -> Callable[[keras.layers.Layer], bool]:
    """Turns a layer selection into a predicate.

    Args:
        layers: ``None`` (every layer), a layer name, a layer class or class
            name, a list mixing names and classes, or a predicate
            ``layer -> bool``.
        model: If given, the selection must match at least one of its layers.
        argument: The argument's name, for error messages.

    Returns:
        A predicate on layers.

    Raises:
        TypeError: For a selection of another kind.
        ValueError: If ``model`` is given and nothing in it matches.
    """
    if layers is None:
        predicate: Callable[[keras.layers.Layer], bool] = lambda layer: True  # noqa: E731
    elif callable(layers) and not isinstance(layers, type):
        predicate = layers
    else:
        items: Iterable = [layers] if isinstance(layers, (str, type)) else layers
        names: set[str] = set()
        classes: list[type] = []
        for item in items:
            if isinstance(item, str):
                names.add(item)
            elif isinstance(item, type) and issubclass(item, keras.layers.Layer):
                classes.append(item)
            else:
                raise TypeError(
                    f"{argument} must hold layer names or keras.layers.Layer classes, got {item!r}"
                )
        class_tuple = tuple(classes)

        def predicate(layer: keras.layers.Layer) -> bool:
            return (
                layer.name in names
                or type(layer).__name__ in names
                or isinstance(layer, class_tuple)
            )

    if (
        model is not None
        and layers is not None
        and not any(predicate(layer) for _, layer in iter_leaf_layers(model))
    ):
        available = ", ".join(f"{n} ({type(x).__name__})" for n, x in iter_leaf_layers(model))
        raise ValueError(
            f"{argument}={layers!r} matches no layer of model {model.name!r}; "
            f"its layers are: {available}"
        )
    return predicate


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

    clone = keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    for old, new, decision in pairs:
        if decision is None:
            # Keras operation nodes (``x[:, 0]`` -> GetItem, ``ops.mean``) have no weights.
            if isinstance(old, keras.layers.Layer):
                new.set_weights(old.get_weights())
        elif decision.initialize is not None:
            decision.initialize(new, old)
    if name is not None:
        clone.name = name
    return clone, log
