"""Which layers of a model one-shot compression works on, decided before anything is copied.

The layers are walked with their sublayers (the projections inside
``MultiHeadAttention`` are layers of their own). A layer is a *target* when
it is selected and has a rule (:func:`tfcompress.oneshot.rules.rule_for`).
A layer with a kernel but no rule (an ``Embedding``, a ``Conv2DTranspose``, a
recurrent or custom layer) is never skipped silently: with ``layers=None``
its presence is an error that lists every such layer and suggests a
selection of the others, and naming one in ``layers`` is an error too.
"""

from __future__ import annotations

import dataclasses

import keras

from tfcompress.core.walk import LayerSelection, layer_selector, walk_layers
from tfcompress.oneshot.rules import container_class, rule_for, supported_classes
from tfcompress.pruning.prunable import prunable_weights

__all__ = ["TargetPlan", "find_layer", "plan_targets"]


@dataclasses.dataclass
class TargetPlan:
    """The layers to compress (qualified names, model order) and those left alone."""

    names: list[str]
    skipped: list[tuple[str, str, str]]


def _has_kernel(layer: keras.layers.Layer) -> bool:
    try:
        return bool(prunable_weights(layer))
    except TypeError:
        return True


def plan_targets(model: keras.Model, layers: LayerSelection, operation: str) -> TargetPlan:
    """The target layers of ``model`` for ``layers`` (None: every layer with a rule).

    Args:
        model: The user's (built) model; it is only read.
        layers: A layer selection (names, class names, classes, a predicate).
            Selecting a ``MultiHeadAttention`` selects its projections.
        operation: ``"prune"``/``"quantize"``/``"compress"``, for messages.

    Returns:
        A :class:`TargetPlan`.

    Raises:
        ValueError: A layer with a kernel but no rule exists and ``layers`` is
            None, or is selected; a selection name matches no layer; nothing
            selected can be compressed.
        TypeError: A selection item that is not a name or a layer class.
    """
    selected = layer_selector(layers, model, sublayers=True, require_match=False)
    containers = container_class()
    chosen_containers: set[str] = set()
    names: list[str] = []
    skipped: list[tuple[str, str, str]] = []
    no_rule: list[tuple[str, str, str]] = []
    suggestion: set[str] = set()
    for name, layer in walk_layers(model, sublayers=True):
        parent = name.rsplit("/", 1)[0] if "/" in name else None
        if isinstance(layer, containers):
            if selected(layer):
                chosen_containers.add(name)
            continue
        inside = parent in chosen_containers
        rule, why = rule_for(layer)
        is_selected = selected(layer) or inside
        if rule is not None:
            if is_selected:
                names.append(name)
                suggestion.add(
                    (parent_class(model, parent) if inside else None) or type(layer).__name__
                )
            else:
                skipped.append((name, type(layer).__name__, "not selected"))
            continue
        if not _has_kernel(layer):
            continue
        if (layers is None or is_selected) and not _inside_target(name, names):
            no_rule.append((name, type(layer).__name__, why))
        else:
            skipped.append((name, type(layer).__name__, why or "no rule"))
    if no_rule:
        listed = "; ".join(f"{n} ({k}: {why})" for n, k, why in no_rule)
        advice = (
            f" Pass layers=[...] naming only layers that have a rule, e.g. layers={sorted(suggestion)!r}."
            if layers is None and suggestion
            else ""
        )
        raise ValueError(
            f"tfcompress.oneshot.{operation}: no one-shot rule for {len(no_rule)} "
            f"{'selected ' if layers is not None else ''}layer(s) of model {model.name!r}: "
            f"{listed}. Rules exist for {', '.join(supported_classes())}.{advice}"
        )
    if not names:
        raise ValueError(
            f"tfcompress.oneshot.{operation}: layers={layers!r} selects no layer of model "
            f"{model.name!r} that one-shot compression can handle ({', '.join(supported_classes())})"
        )
    return TargetPlan(names, skipped)


def _inside_target(name: str, names: list[str]) -> bool:
    return any(name.startswith(f"{target}/") for target in names)


def parent_class(model: keras.Model, parent: str | None) -> str | None:
    if parent is None:
        return None
    layer = find_layer(model, parent)
    return type(layer).__name__ if layer is not None else None


def find_layer(model: keras.Model, qualified: str) -> keras.layers.Layer | None:
    """The layer of ``model`` with this qualified name (as :func:`walk_layers` names it)."""
    for name, layer in walk_layers(model, sublayers=True, models=True):
        if name == qualified:
            return layer
    return None
