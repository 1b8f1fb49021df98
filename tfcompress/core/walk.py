"""Walking the layers of a model and selecting some of them: written once, used by every technique.

Two questions come up everywhere: *which layers does this model contain* and
*which of them did the user mean by* ``layers=``. :func:`walk_layers` answers
the first (nested models entered, shared layers once, optionally the
sublayers of wrapper layers such as ``Bidirectional``), :func:`layer_selector`
the second, with one meaning of a selection for every technique: pruning,
quantization, binarization, factorization and clustering all accept the same
:data:`LayerSelection` and pick the same layers from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import keras

__all__ = ["LayerSelection", "layer_selector", "walk_layers"]

#: ``None`` (every layer), a layer name or class name, a layer class, a list
#: mixing those, or a predicate ``layer -> bool``.
LayerSelection = str | type | Callable[[keras.layers.Layer], bool] | Sequence[str | type] | None


def walk_layers(
    model: keras.layers.Layer, *, sublayers: bool = False, models: bool = False
) -> Iterator[tuple[str, keras.layers.Layer]]:
    """Yields ``(qualified name, layer)`` for the layers of ``model``, in model order.

    Nested models are entered (their layers are named ``"inner/dense"``); a
    layer used twice is yielded once, at its first place.

    Args:
        model: A Keras model (or any layer, whose sublayers are then walked).
        sublayers: Also yield the layers tracked inside leaf layers (the
            ``LSTM`` inside a ``Bidirectional``, the cell inside an ``RNN``),
            each after the layer that holds it. Rewrites cannot replace those,
            so they are left out by default.
        models: Also yield the nested models themselves, before their layers.

    Returns:
        An iterator over ``(name, layer)``; ``model`` itself is never yielded.

    Example:
        >>> [name for name, _ in walk_layers(model)]
        ['dense', 'inner/dense_1', 'inner/dense_2']
    """
    seen: set[int] = set()

    def children(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
        if isinstance(layer, keras.Model):
            return list(layer.layers)
        return list(layer._flatten_layers(include_self=False, recursive=False))

    def visit(layer: keras.layers.Layer, prefix: str) -> Iterator[tuple[str, keras.layers.Layer]]:
        for child in children(layer):
            if id(child) in seen:
                continue
            seen.add(id(child))
            name = f"{prefix}{child.name}"
            if isinstance(child, keras.Model):
                if models:
                    yield name, child
                yield from visit(child, f"{name}/")
            else:
                yield name, child
                if sublayers:
                    yield from visit(child, f"{name}/")

    yield from visit(model, "")


def layer_selector(
    layers: LayerSelection,
    model: keras.Model | None = None,
    argument: str = "layers",
    *,
    sublayers: bool = False,
    require_match: bool = True,
) -> Callable[[keras.layers.Layer], bool]:
    """Turns a layer selection into a predicate ``layer -> bool``.

    A string matches a layer of that name or a layer whose class has that
    name (``"Dense"`` matches every ``keras.layers.Dense``, not subclasses); a
    class matches its instances, subclasses included.

    Args:
        layers: A :data:`LayerSelection`.
        model: If given, every name in the selection must match a layer of it
            (a typo is an error, not an empty selection), and a predicate or a
            class must match at least one.
        argument: The argument's name, for error messages.
        sublayers: Check ``model``'s wrapped sublayers too (see
            :func:`walk_layers`), for techniques that reach inside wrappers.
        require_match: With ``model``, also require the whole selection to
            match a layer; a caller with a stricter check of its own (pruning:
            "matches no prunable layer") passes ``False``. Names are always
            checked.

    Returns:
        The predicate.

    Raises:
        TypeError: For an item that is neither a string nor a
            ``keras.layers.Layer`` class.
        ValueError: If ``model`` is given and the selection, or one of its
            names, matches no layer of it.

    Example:
        >>> pick = layer_selector(["Dense", "conv_out"], model)
        >>> [layer.name for _, layer in walk_layers(model) if pick(layer)]
        ['dense', 'dense_1', 'conv_out']
    """
    names: set[str] = set()
    if layers is None:
        predicate: Callable[[keras.layers.Layer], bool] = lambda layer: True  # noqa: E731
    elif callable(layers) and not isinstance(layers, type):
        predicate = layers
    else:
        items: Iterable = [layers] if isinstance(layers, (str, type)) else layers
        classes: list[type] = []
        for item in items:
            if isinstance(item, str):
                names.add(item)
            elif isinstance(item, type) and issubclass(item, keras.layers.Layer):
                classes.append(item)
            else:
                raise TypeError(
                    f"{argument} must hold layer names or keras.layers.Layer classes (or class "
                    f"names), got {item!r}"
                )
        class_tuple = tuple(classes)

        def predicate(layer: keras.layers.Layer) -> bool:
            return (
                layer.name in names
                or type(layer).__name__ in names
                or isinstance(layer, class_tuple)
            )

    if model is None or layers is None:
        return predicate
    leaves = [layer for _, layer in walk_layers(model, sublayers=sublayers)]
    known = {layer.name for layer in leaves} | {type(layer).__name__ for layer in leaves}
    missing = sorted(names - known)
    if missing or (require_match and not any(predicate(layer) for layer in leaves)):
        available = ", ".join(
            f"{n} ({type(x).__name__})" for n, x in walk_layers(model, sublayers=sublayers)
        )
        what = f"no layer named (or of class) {missing}" if missing else ""
        if any(predicate(layer) for layer in leaves):
            problem = f"{argument}={layers!r}: {what} in model {model.name!r}"
        else:
            problem = f"{argument}={layers!r} matches no layer of model {model.name!r}"
            problem += f" ({what})" if what else ""
        raise ValueError(f"{problem}; its layers are: {available}")
    return predicate
