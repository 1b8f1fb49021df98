"""``structure_model`` and ``densify``: trained Dense layers to structured ones and back."""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from tfcompress.core.rewrite import Replacement, rewrite_model
from tfcompress.core.table import format_skipped, format_table
from tfcompress.core.walk import LayerSelection, layer_selector, walk_layers
from tfcompress.structured.circulant import (
    PRODUCTS,
    BlockStructuredDense,
    CirculantDense,
    check_positive_int,
    dense_config,
)
from tfcompress.structured.toeplitz import ToeplitzDense

__all__ = ["KINDS", "StructureReport", "StructuredLayer", "densify", "structure_model"]

#: ``kind=`` of :func:`structure_model` -> the layer class it builds.
KINDS: dict[str, type[BlockStructuredDense]] = {
    "circulant": CirculantDense,
    "toeplitz": ToeplitzDense,
}

# Config keys of Dense / Conv2D that a structured layer does not take.
_DROPPED_KEYS = (
    "lora_rank",
    "lora_alpha",
    "quantization_config",
    "filters",
    "kernel_size",
    "strides",
    "padding",
    "data_format",
    "dilation_rate",
    "groups",
)


@dataclasses.dataclass
class StructuredLayer:
    """One replaced layer: its kernel shape, parameter counts and projection error."""

    name: str
    type: str
    matrix_shape: tuple[int, int]
    params_before: int  # kernel only; the bias is unchanged
    params_after: int
    relative_error: float  # ||W - S||_F / ||W||_F, S the nearest structured kernel


@dataclasses.dataclass
class StructureReport:
    """What :func:`structure_model` did: replaced layers, skipped layers and totals."""

    kind: str
    block_size: int
    structured: list[StructuredLayer]
    skipped: list[tuple[str, str, str]]  # (name, type, reason)
    params_before: int
    params_after: int

    @property
    def param_ratio(self) -> float:
        """Parameters of the structured model over those of the original."""
        return self.params_after / self.params_before if self.params_before else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "param_ratio": self.param_ratio}

    def to_string(self) -> str:
        rows = [
            [s.name, s.type, s.matrix_shape, s.params_before, s.params_after,
             round(s.relative_error, 4)]
            for s in self.structured
        ]  # fmt: skip
        text = format_table(
            rows,
            ["layer", "type", "matrix", "params", "structured params", "rel. error"],
            title=(
                f"structure_model ({self.kind}, block_size={self.block_size}): "
                f"{self.params_before:,} -> {self.params_after:,} parameters "
                f"({self.param_ratio:.3f}x)"
            ),
        )
        return text + format_skipped(self.skipped)

    def __str__(self) -> str:
        return self.to_string()


def _matrix_shape(layer: keras.layers.Layer) -> tuple[int, int]:
    shape = tuple(int(d) for d in layer.kernel.shape)
    return shape[-2], shape[-1]


def _not_structurable(layer: keras.layers.Layer, block_size: int) -> tuple[type, str] | None:
    """None if ``layer`` can be replaced, else ``(error class, reason)``: a wrong kind of layer
    is a TypeError, a right kind whose state or dimensions do not fit a ValueError."""
    if type(layer) not in (keras.layers.Dense, keras.layers.Conv2D):
        return TypeError, (
            f"layer type {type(layer).__name__} cannot be structured; structure_model replaces "
            "keras.layers.Dense and 1x1 keras.layers.Conv2D (exact types)"
        )
    if isinstance(layer, keras.layers.Conv2D):
        config = layer.get_config()
        pointwise = (
            tuple(config["kernel_size"]) == (1, 1)
            and tuple(config["strides"]) == (1, 1)
            and tuple(config["dilation_rate"]) == (1, 1)
            and config["groups"] == 1
            and config["data_format"] == "channels_last"
        )
        if not pointwise:
            return TypeError, (
                "only 1x1 Conv2D layers (strides 1, no dilation, groups 1, channels_last) "
                "are a Dense over channels"
            )
    if getattr(layer, "quantization_mode", None):
        return ValueError, (
            f"it is quantized by Keras ({layer.quantization_mode}); structure the float model"
        )
    if getattr(layer, "lora_enabled", False):
        return ValueError, "it has LoRA enabled; merge or disable LoRA first"
    rows, cols = _matrix_shape(layer)
    if rows % block_size or cols % block_size:
        return ValueError, (
            f"block_size={block_size} does not divide its kernel's (in, out) = ({rows}, {cols}); "
            "expected a common divisor"
        )
    return None


def structure_model(
    model: keras.Model,
    kind: str = "circulant",
    block_size: int = 16,
    layers: LayerSelection = None,
    *,
    product: str = "auto",
    return_report: bool = False,
    verbose: int = 1,
) -> keras.Model | tuple[keras.Model, StructureReport]:
    """A copy of ``model`` with Dense (and 1x1 Conv2D) layers replaced by structured ones.

    Each replaced layer becomes a :class:`~tfcompress.structured.circulant.CirculantDense`
    or :class:`~tfcompress.structured.toeplitz.ToeplitzDense` with the same
    units, activation, bias and regularizers, initialised with the
    least-squares nearest structured kernel to the trained one: every
    parameter is the mean of the kernel entries it stands for (the mean along
    each circulant diagonal, or each diagonal of a Toeplitz block). Biases are
    kept. The user's model is not modified. A short fine-tune usually recovers
    most of the accuracy the projection loses.

    Args:
        model: A built Sequential or Functional model (nested models included).
        kind: ``"circulant"`` or ``"toeplitz"``.
        block_size: ``b``, a positive int dividing both dimensions of each kernel.
        layers: Which layers to consider (names, types, a predicate; default
            all Dense and 1x1 Conv2D layers). With the default, layers that
            cannot be replaced (other types, dimensions ``block_size`` does not
            divide) are skipped and reported; a selected layer that cannot be
            replaced is an error.
        product: The structured layers' ``product`` (see ``CirculantDense``).
        return_report: Also return a :class:`StructureReport`.
        verbose: 1 prints the report, 0 is silent.

    Returns:
        The structured model (uncompiled), or ``(model, report)``.

    Raises:
        ValueError: Unknown ``kind`` or ``product``; ``block_size`` not a
            positive int; a selected layer whose dimensions ``block_size``
            does not divide; a ``layers`` selection matching nothing; no layer
            that could be replaced.
        TypeError: A selected layer of a type that cannot be structured (not a
            Dense or a 1x1 Conv2D); a subclassed model.

    Example:
        >>> small, report = tfc.structure_model(model, "circulant", block_size=16,
        ...                                     return_report=True)
        >>> report.param_ratio
        >>> tfc.models.train_classifier(small, data, epochs=2)  # short fine-tune
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {tuple(KINDS)}, got {kind!r}")
    block_size = check_positive_int("structure_model", "block_size", block_size)
    if product not in PRODUCTS:
        raise ValueError(f"product must be one of {PRODUCTS}, got {product!r}")
    cls = KINDS[kind]
    selector = layer_selector(layers, model)
    explicit = layers is not None

    chosen: dict[int, str] = {}
    skipped: list[tuple[str, str, str]] = []
    for name, layer in walk_layers(model):
        if id(layer) in chosen or not selector(layer) or not layer.weights:
            continue
        refusal = _not_structurable(layer, block_size)
        if refusal is None:
            chosen[id(layer)] = name
        elif explicit:
            error, reason = refusal
            raise error(f"cannot structure layer {name!r}: {reason}")
        else:
            skipped.append((name, type(layer).__name__, refusal[1]))
    if not chosen:
        details = "; ".join(f"{n}: {why}" for n, _, why in skipped) or "no Dense/Conv2D layer"
        raise ValueError(
            f"structure_model(kind={kind!r}, block_size={block_size}) found no layer to "
            f"replace ({details})"
        )

    structured: list[StructuredLayer] = []

    def replace(layer: keras.layers.Layer) -> Replacement | None:
        name = chosen.get(id(layer))
        if name is None:
            return None
        config = layer.get_config()
        if isinstance(layer, keras.layers.Conv2D):
            config["units"] = config["filters"]
        for key in _DROPPED_KEYS:
            config.pop(key, None)
        new = cls.from_config({**config, "block_size": block_size, "product": product})

        def initialize(new_layer, old_layer, name=name):
            kernel = np.asarray(keras.ops.convert_to_numpy(old_layer.kernel), np.float64)
            kernel = kernel.reshape(_matrix_shape(old_layer))  # a 1x1 conv's (1, 1, in, out)
            bias = old_layer.bias if old_layer.use_bias else None
            error = new_layer.set_kernel(kernel, bias)
            structured.append(
                StructuredLayer(
                    name=name,
                    type=type(old_layer).__name__,
                    matrix_shape=kernel.shape,
                    params_before=int(kernel.size),
                    params_after=int(np.prod(new_layer.structured_weight.shape)),
                    relative_error=float(np.sqrt(error / max(np.sum(kernel**2), 1e-30))),
                )
            )

        return Replacement(new, initialize)

    new_model, _ = rewrite_model(model, replace)
    report = StructureReport(
        kind=kind,
        block_size=block_size,
        structured=structured,
        skipped=skipped,
        params_before=int(model.count_params()),
        params_after=int(new_model.count_params()),
    )
    if verbose:
        print(report.to_string())
    return (new_model, report) if return_report else new_model


def densify(model: keras.Model) -> keras.Model:
    """A copy of ``model`` with every structured layer replaced by its exact Dense equivalent.

    Each :class:`~tfcompress.structured.circulant.BlockStructuredDense` becomes a
    ``keras.layers.Dense`` of the same name and config whose kernel is the
    expanded structured kernel; outputs are unchanged (to float rounding). Use it
    to hand the model to a tool that knows only stock layers, or where speed
    matters more than file size (``docs/structured.md``).

    Args:
        model: A built Sequential or Functional model.

    Returns:
        The dense model (uncompiled).

    Raises:
        ValueError: If the model has no structured layer.
        TypeError: For subclassed models.

    Example:
        >>> dense = tfc.densify(tfc.structure_model(model, block_size=16))
    """
    if not any(isinstance(x, BlockStructuredDense) for _, x in walk_layers(model)):
        raise ValueError(
            f"model {model.name!r} has no structured layer (CirculantDense, ToeplitzDense)"
        )

    def replace(layer: keras.layers.Layer) -> Replacement | None:
        if not isinstance(layer, BlockStructuredDense):
            return None

        def initialize(new, old):
            new.kernel.assign(old.kernel)
            if old.bias is not None:
                new.bias.assign(old.bias)

        return Replacement(keras.layers.Dense.from_config(dense_config(layer)), initialize)

    return rewrite_model(model, replace)[0]
