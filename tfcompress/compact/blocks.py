"""The compact blocks that replace a KxK ``Conv2D``: geometry, Keras graphs and their weights.

A block kind is an object (:class:`Separable`, :class:`Flattened`,
:class:`Fire`) that says which convolutions it can replace
(:meth:`BlockKind.unsupported`), computes the block's weights from the
trained kernel with NumPy (:meth:`BlockKind.plan`, before anything is built)
and builds the block as a small Functional model of stock Keras layers
(:meth:`BlockKind.build`), named like the layer it replaces. Every block
produces the same output shape as the convolution, for any strides, padding
and dilation it accepts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from tfcompress.compact import decompose
from tfcompress.core import axis_conv

__all__ = ["BLOCK_KINDS", "BlockKind", "BlockPlan", "ConvSpec", "Fire", "Flattened", "Separable"]


def _pair(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """What a block must reproduce of one ``keras.layers.Conv2D``."""

    name: str
    kernel_size: tuple[int, int]
    strides: tuple[int, int]
    dilation: tuple[int, int]
    padding: str
    cin: int
    cout: int
    use_bias: bool
    input_hw: tuple[int | None, int | None]

    @classmethod
    def from_layer(cls, layer: keras.layers.Conv2D) -> ConvSpec:
        shape = None
        try:
            shape = tuple(layer.input.shape)
        except (AttributeError, ValueError, RuntimeError):
            shape = (getattr(layer, "_build_shapes_dict", None) or {}).get("input_shape")
        hw = (shape[1], shape[2]) if shape is not None and len(shape) == 4 else (None, None)
        kernel = tuple(layer.kernel.shape)
        return cls(
            name=layer.name,
            kernel_size=(int(kernel[0]), int(kernel[1])),
            strides=_pair(layer.strides),
            dilation=_pair(layer.dilation_rate),
            padding=layer.padding,
            cin=int(kernel[2]),
            cout=int(kernel[3]),
            use_bias=bool(layer.use_bias),
            input_hw=hw,
        )

    def pads(self) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """``((top, bottom), (left, right))`` of the convolution; None if input-size dependent."""
        if self.padding == "valid":
            return (0, 0), (0, 0)
        axes = [
            axis_conv.same_pads(n, k, s, d)
            for n, k, s, d in zip(self.input_hw, self.kernel_size, self.strides, self.dilation)
        ]
        return None if None in axes else (axes[0], axes[1])  # type: ignore[return-value]

    def output_hw(self) -> tuple[int, int] | None:
        pads = self.pads()
        if pads is None or None in self.input_hw:
            return None
        return tuple(  # type: ignore[return-value]
            (n + p[0] + p[1] - (k - 1) * d - 1) // s + 1
            for n, p, k, s, d in zip(
                self.input_hw, pads, self.kernel_size, self.strides, self.dilation
            )
        )

    def params(self) -> int:
        kh, kw = self.kernel_size
        return kh * kw * self.cin * self.cout + (self.cout if self.use_bias else 0)

    def macs(self) -> int | None:
        out = self.output_hw()
        kh, kw = self.kernel_size
        return None if out is None else out[0] * out[1] * kh * kw * self.cin * self.cout


def conv_macs(model: keras.Model) -> int | None:
    """Multiply-accumulates of the convolutions of a block (None if a spatial size is unknown)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            h, w = layer.output.shape[1:3]
            if h is None or w is None:
                return None
            total += int(h) * int(w) * int(np.prod(layer.kernel.shape))
    return total


@dataclasses.dataclass
class BlockPlan:
    """A block's configuration and its weights, computed before anything is built.

    Attributes:
        config: The resolved size, e.g. ``{"rank": 2}`` or ``{"squeeze": 4, ...}``.
        weights: ``{sublayer name: [kernel, (bias)]}``.
        composed: The ``(kh, kw, cin, cout)`` kernel the block computes.
    """

    config: dict[str, int]
    weights: dict[str, list[np.ndarray]]
    composed: np.ndarray

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())


class BlockKind:
    """One kind of compact block. Subclasses implement the four methods."""

    name = ""
    knobs: tuple[str, ...] = ()

    def unsupported(self, spec: ConvSpec) -> str | None:
        """Why this kind cannot replace a convolution (None if it can)."""
        return None

    def plan(
        self, kernel: np.ndarray, bias: np.ndarray | None, spec: ConvSpec, knobs: dict[str, Any]
    ) -> BlockPlan:
        raise NotImplementedError

    def build(self, spec: ConvSpec, plan: BlockPlan, activation: Any, common: dict) -> keras.Model:
        raise NotImplementedError

    @staticmethod
    def _finish(y, spec, activation, common, x) -> keras.Model:
        """The block's model; the activation (if any) as its last layer."""
        if activation is not None and activation is not keras.activations.linear:
            y = keras.layers.Activation(activation, name=f"{spec.name}_activation", **common)(y)
        return keras.Model(x, y, name=spec.name)

    @staticmethod
    def _input(spec: ConvSpec) -> Any:
        return keras.Input(shape=(*spec.input_hw, spec.cin), name=f"{spec.name}_input")


class Separable(BlockKind):
    """DepthwiseConv2D(KxK, depth_multiplier=rank) then a 1x1 Conv2D (MobileNet, Xception).

    Unequal strides are left as they were: TensorFlow's CPU depthwise kernel
    rejects them when oneDNN is off (AVX2-only CPUs).
    """

    name = "separable"
    knobs = ("rank",)

    def unsupported(self, spec):
        if spec.strides[0] != spec.strides[1]:
            return (
                f"its strides {spec.strides} differ: TensorFlow's CPU depthwise kernel needs "
                "equal strides unless oneDNN is on"
            )
        return None

    def plan(self, kernel, bias, spec, knobs):
        kh, kw = spec.kernel_size
        rank = min(knobs["rank"], kh * kw, spec.cout)  # beyond this the block is already exact
        depthwise, pointwise = decompose.separable_factors(kernel, rank)
        weights = {
            f"{spec.name}_depthwise": [depthwise],
            f"{spec.name}_pointwise": [pointwise] + ([bias] if bias is not None else []),
        }
        composed = decompose.compose_separable(depthwise, pointwise)
        return BlockPlan({"rank": rank}, weights, composed)

    def build(self, spec, plan, activation, common):
        x = self._input(spec)
        y = keras.layers.DepthwiseConv2D(
            spec.kernel_size, strides=spec.strides, padding=spec.padding,
            depth_multiplier=plan.config["rank"], dilation_rate=spec.dilation, use_bias=False,
            name=f"{spec.name}_depthwise", **common,
        )(x)  # fmt: skip
        y = keras.layers.Conv2D(
            spec.cout, 1, use_bias=spec.use_bias, activation=activation,
            name=f"{spec.name}_pointwise", **common,
        )(y)  # fmt: skip
        return keras.Model(x, y, name=spec.name)


class Flattened(BlockKind):
    """Per path: 1x1 lateral conv, Kx1 vertical and 1xK horizontal depthwise convs (Jin et al.).

    ``rank`` parallel paths are summed (``keras.layers.Add``). The vertical
    stage takes the vertical stride and dilation, the horizontal one the
    horizontal ones, each with the convolution's padding mode: TensorFlow's
    'same' padding of an axis depends only on that axis, so the block's
    output equals the convolution with the composed kernel exactly. A stage
    whose kernel size is 1 is left out (its scale folded into the lateral
    conv) and the other one takes both strides.

    Strided convolutions keep every depthwise stage at equal strides, which
    TensorFlow's CPU kernel needs when oneDNN is off (AVX2-only CPUs): the
    padding is explicit (``ZeroPadding2D``), the vertical stage runs at stride
    1 and the horizontal one takes ``(s, s)``
    (:func:`~tfcompress.core.axis_conv.equal_stride_split`). Unequal strides,
    or 'same' padding with strides > 1 on an input of unknown size, are left
    as they were.
    """

    name = "flattened"
    knobs = ("rank",)

    def unsupported(self, spec):
        split = self._split(spec)
        return split if isinstance(split, str) else None

    @staticmethod
    def _split(spec: ConvSpec) -> axis_conv.EqualStrideSplit | str | None:
        """None when unstrided (the plain chain), else the equal-stride form or why not."""
        if spec.strides == (1, 1):
            return None
        return axis_conv.equal_stride_split(
            spec.strides, spec.kernel_size, spec.dilation, spec.padding, spec.input_hw
        )

    def plan(self, kernel, bias, spec, knobs):
        rank = knobs["rank"]
        a, b, c = decompose.cp_als(kernel, rank, iterations=knobs.get("als_iterations", 50))
        kh, kw = spec.kernel_size
        lateral = a * (b[:, :1, :] if kh == 1 else 1.0) * (c[:, :1, :] if kw == 1 else 1.0)
        weights = {}
        for k in range(rank):
            names = self._names(spec, rank, k)
            weights[names["lateral"]] = [lateral[:, :, k].T[None, None]]
            if kh > 1:
                weights[names["vertical"]] = [b[:, :, k].T[:, None, :, None]]
            if kw > 1:
                weights[names["horizontal"]] = [c[:, :, k].T[None, :, :, None]]
            if k == 0 and bias is not None:
                weights[names["horizontal" if kw > 1 else "vertical"]].append(bias)
        composed = decompose.compose_flattened(a, b, c)
        return BlockPlan({"rank": rank}, weights, composed)

    @staticmethod
    def _names(spec: ConvSpec, rank: int, k: int) -> dict[str, str]:
        tail = f"_{k}" if rank > 1 else ""
        return {s: f"{spec.name}_{s}{tail}" for s in ("lateral", "vertical", "horizontal")}

    def build(self, spec, plan, activation, common):
        rank = plan.config["rank"]
        (kh, kw), (dh, dw) = spec.kernel_size, spec.dilation
        split = self._split(spec)
        padding, (sh, sw) = spec.padding, spec.strides
        vertical_strides, horizontal_strides = (sh, 1 if kw > 1 else sw), (1 if kh > 1 else sh, sw)
        if isinstance(split, axis_conv.EqualStrideSplit):
            padding = split.padding
            vertical_strides = split.vertical_strides if kw > 1 else split.horizontal_strides
            horizontal_strides = split.horizontal_strides
        x = self._input(spec)
        paths = []
        for k in range(rank):
            names = self._names(spec, rank, k)
            lateral = keras.layers.Conv2D(
                spec.cout, 1, use_bias=False, name=names["lateral"], **common
            )
            y = lateral(x)
            if isinstance(split, axis_conv.EqualStrideSplit) and split.pads != ((0, 0), (0, 0)):
                # After the 1x1 lateral (no bias: zeros stay zeros), so it runs unpadded.
                y = keras.layers.ZeroPadding2D(
                    split.pads, name=f"{names['lateral']}_pad", **common
                )(y)
            last_activation = activation if rank == 1 else None
            if kh > 1:
                y = keras.layers.DepthwiseConv2D(
                    (kh, 1), strides=vertical_strides, padding=padding,
                    dilation_rate=(dh, 1), use_bias=spec.use_bias and k == 0 and kw == 1,
                    activation=last_activation if kw == 1 else None,
                    name=names["vertical"], **common,
                )(y)  # fmt: skip
            if kw > 1:
                y = keras.layers.DepthwiseConv2D(
                    (1, kw), strides=horizontal_strides, padding=padding,
                    dilation_rate=(1, dw), use_bias=spec.use_bias and k == 0,
                    activation=last_activation, name=names["horizontal"], **common,
                )(y)  # fmt: skip
            paths.append(y)
        if rank == 1:
            return keras.Model(x, paths[0], name=spec.name)
        y = keras.layers.Add(name=f"{spec.name}_sum", **common)(paths)
        return self._finish(y, spec, activation, common, x)


class Fire(BlockKind):
    """Squeeze 1x1 (cin -> s), then 1x1 (s -> e1) and KxK (s -> e3) expands, concatenated.

    The 1x1 expand serves output channels ``[0, e1)`` and reads the squeezed
    map at the KxK convolution's centre tap: a zero-padding / cropping before
    it (from the convolution's own padding) aligns it, so the block's output
    shape and its composed kernel are exactly those of
    :func:`~tfcompress.compact.decompose.compose_fire`. The squeeze is linear
    (SqueezeNet has a ReLU there; a linear squeeze keeps the initialisation
    exact), the bias and activation follow the concatenation.
    """

    name = "fire"
    knobs = ("squeeze_ratio", "kxk_fraction")

    def unsupported(self, spec):
        if spec.pads() is None:
            return (
                "its 'same' padding with strides > 1 depends on the input size, which is "
                "unknown; the fire block's 1x1 branch needs it to align with the centre tap"
            )
        return None

    def plan(self, kernel, bias, spec, knobs):
        squeeze = max(1, min(round(knobs["squeeze_ratio"] * spec.cout), spec.cin))
        e3 = round(knobs["kxk_fraction"] * spec.cout)
        e1 = spec.cout - e3
        s, x1, x3 = decompose.fire_factors(kernel, squeeze, e1)
        name = spec.name
        weights = {f"{name}_squeeze": [s]}
        if e1:
            weights[f"{name}_expand1x1"] = [x1] + ([bias[:e1]] if bias is not None else [])
        if e3:
            weights[f"{name}_expand{self._kxk(spec)}"] = [x3] + (
                [bias[e1:]] if bias is not None else []
            )
        composed = decompose.compose_fire(s, x1, x3, spec.kernel_size)
        return BlockPlan({"squeeze": squeeze, "e1": e1, "e3": e3}, weights, composed)

    @staticmethod
    def _kxk(spec: ConvSpec) -> str:
        return "x".join(map(str, spec.kernel_size))

    def build(self, spec, plan, activation, common):
        name, cfg = spec.name, plan.config
        x = self._input(spec)
        squeezed = keras.layers.Conv2D(
            cfg["squeeze"], 1, use_bias=False, name=f"{name}_squeeze", **common
        )(x)
        branches = []
        if cfg["e1"]:
            y = squeezed
            # Net padding (>0) or cropping (<0) that puts the centre tap under a 1x1 'valid' conv.
            shift = [
                (p[0] - ((k - 1) // 2) * d, p[1] - (k - 1 - (k - 1) // 2) * d)
                for p, k, d in zip(spec.pads(), spec.kernel_size, spec.dilation)
            ]
            pad = tuple((max(t, 0), max(b, 0)) for t, b in shift)
            crop = tuple((max(-t, 0), max(-b, 0)) for t, b in shift)
            if any(map(any, pad)):
                y = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad", **common)(y)
            if any(map(any, crop)):
                y = keras.layers.Cropping2D(crop, name=f"{name}_crop", **common)(y)
            expand = keras.layers.Conv2D(
                cfg["e1"], 1, strides=spec.strides, use_bias=spec.use_bias,
                name=f"{name}_expand1x1", **common,
            )  # fmt: skip
            branches.append(expand(y))
        if cfg["e3"]:
            expand = keras.layers.Conv2D(
                cfg["e3"], spec.kernel_size, strides=spec.strides, padding=spec.padding,
                dilation_rate=spec.dilation, use_bias=spec.use_bias,
                name=f"{name}_expand{self._kxk(spec)}", **common,
            )  # fmt: skip
            branches.append(expand(squeezed))
        y = (
            keras.layers.Concatenate(name=f"{name}_concat", **common)(branches)
            if len(branches) > 1
            else branches[0]
        )
        return self._finish(y, spec, activation, common, x)


BLOCK_KINDS: dict[str, BlockKind] = {k.name: k for k in (Separable(), Flattened(), Fire())}
