"""``to_transferred``: a trained model's Conv2D layers as :class:`TransferredConv2D`.

Each new layer starts from the least-squares projection of the trained kernel
onto the group structure (:func:`~tfcompress.compact.transferred.project_kernel`);
the report gives the relative projection error per layer.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np

from tfcompress.compact.transferred import (
    FilterGroup,
    TransferredConv2D,
    _check_fits,
    _numpy,
    filter_group,
)
from tfcompress.core.rewrite import Replacement, rewrite_model
from tfcompress.core.table import format_skipped, format_table
from tfcompress.core.walk import LayerSelection, layer_selector, walk_layers

__all__ = ["TransferReport", "TransferredLayer", "to_transferred"]


@dataclasses.dataclass
class TransferredLayer:
    """One converted Conv2D: its group, parameter counts and projection errors."""

    name: str
    group: str
    filters: int
    params_before: int
    params_after: int
    relative_error: float  # ||W - W_G||_F / ||W||_F of the kernel
    bias_relative_error: float | None  # the same for the bias (None without one)


@dataclasses.dataclass
class TransferReport:
    """What :func:`to_transferred` did: converted layers, skipped layers and totals."""

    group: str
    converted: list[TransferredLayer]
    skipped: list[tuple[str, str, str]]  # (name, type, reason)
    params_before: int
    params_after: int

    @property
    def param_ratio(self) -> float:
        """Parameters of the converted model over those of the original."""
        return self.params_after / self.params_before if self.params_before else 1.0

    def to_string(self) -> str:
        rows = [
            [c.name, c.filters, c.params_before, c.params_after, round(c.relative_error, 4),
             None if c.bias_relative_error is None else round(c.bias_relative_error, 4)]
            for c in self.converted
        ]  # fmt: skip
        text = format_table(
            rows,
            ["layer", "filters", "params", "new params", "rel. error", "bias rel. error"],
            title=(
                f"to_transferred (group={self.group!r}): {self.params_before:,} -> "
                f"{self.params_after:,} parameters ({self.param_ratio:.3f}x)"
            ),
        )
        return text + format_skipped(self.skipped)

    __str__ = to_string


def _convertible(layer: keras.layers.Layer, group: FilterGroup) -> str | None:
    """None if ``layer`` can become a TransferredConv2D with ``group``, else why not."""
    if type(layer) is not keras.layers.Conv2D:
        return f"layer type {type(layer).__name__} is not keras.layers.Conv2D (exact type)"
    if layer.groups != 1:
        return f"grouped Conv2D (groups={layer.groups}) cannot be converted"
    if layer.data_format != "channels_last":
        return f"data_format={layer.data_format!r}; only channels_last is supported"
    return _check_fits(group, layer.filters, tuple(layer.kernel_size))


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30))


def to_transferred(
    model: keras.Model,
    group: str = "rotations",
    layers: LayerSelection = None,
    *,
    return_report: bool = False,
    verbose: int = 1,
) -> keras.Model | tuple[keras.Model, TransferReport]:
    """A copy of ``model`` with Conv2D layers replaced by :class:`TransferredConv2D`.

    Each new layer starts from the least-squares projection of the trained
    kernel (:func:`project_kernel`; the bias: the mean of each block's) and
    the report gives the relative projection error per layer; fine-tune after
    converting. The user's model is not modified.

    Args:
        model: A built Sequential or Functional model (nested models included).
        group: ``"rotations"``, ``"flips"``, ``"flips2"`` or ``"d4"``.
        layers: Which layers to convert (names, types, a predicate). Default:
            every Conv2D the group fits, the others listed as skipped; a
            selected layer that cannot be converted is an error.
        return_report: Also return a :class:`TransferReport`.
        verbose: 1 prints the report, 0 is silent.

    Returns:
        The converted model (uncompiled), or ``(model, report)``.

    Raises:
        ValueError: An unknown ``group``; a selected layer it does not fit;
            a selection matching nothing; no layer to convert.
        TypeError: A subclassed model.

    Example:
        >>> small, report = to_transferred(model, group="flips", return_report=True)
        >>> [layer.relative_error for layer in report.converted]
    """
    spec = filter_group(group)
    selector = layer_selector(layers, model)
    explicit = layers is not None
    chosen: dict[int, str] = {}
    skipped: list[tuple[str, str, str]] = []
    for name, layer in walk_layers(model):
        if id(layer) in chosen or not selector(layer) or not layer.weights:
            continue
        reason = _convertible(layer, spec)
        if reason is None:
            chosen[id(layer)] = name
        elif explicit:
            raise ValueError(
                f"layers: cannot convert layer {name!r} with group={spec.name!r}: {reason}"
            )
        elif isinstance(layer, keras.layers.Conv2D):
            skipped.append((name, type(layer).__name__, reason))
    if not chosen:
        details = "; ".join(f"{n}: {why}" for n, _, why in skipped) or "no Conv2D layer"
        raise ValueError(
            f"to_transferred(group={spec.name!r}) found no layer to convert ({details})"
        )

    converted: list[TransferredLayer] = []

    def replace(layer: keras.layers.Layer) -> Replacement | None:
        if id(layer) not in chosen:
            return None
        config = {**layer.get_config(), "group": spec.name}

        def initialize(new, old):
            bias = _numpy(old.bias).astype(np.float64) if old.use_bias else None
            error = new.set_kernel(old.kernel, bias)
            bias_error = None
            if bias is not None:
                shared = np.repeat(_numpy(new.bias).astype(np.float64), spec.size)
                bias_error = _relative(bias, shared)
            params = [sum(math.prod(v.shape) for v in x.weights) for x in (old, new)]
            converted.append(
                TransferredLayer(
                    chosen[id(old)], spec.name, old.filters, *params, error, bias_error
                )
            )

        return Replacement(TransferredConv2D.from_config(config), initialize)

    new_model, _ = rewrite_model(model, replace)
    report = TransferReport(
        group=spec.name,
        converted=converted,
        skipped=skipped,
        params_before=int(model.count_params()),
        params_after=int(new_model.count_params()),
    )
    if verbose:
        print(report.to_string())
    return (new_model, report) if return_report else new_model
