"""``factorize_model``: replace Dense/Conv2D layers of a trained model by low-rank factors."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from tfcompress.core import axis_conv
from tfcompress.core.rewrite import Replacement, rewrite_model
from tfcompress.core.table import format_skipped, format_table
from tfcompress.core.walk import LayerSelection, layer_selector, walk_layers
from tfcompress.lowrank import conv_decompositions
from tfcompress.lowrank import decompositions as lr
from tfcompress.lowrank.conv import LowRankConv2D
from tfcompress.lowrank.dense import LowRankDense

__all__ = ["FactorizeReport", "FactorizedLayer", "expand_lowrank", "factorize_model"]

# Config keys of keras.layers.Dense that a LowRankDense does not take.
_DENSE_ONLY_KEYS = ("lora_rank", "lora_alpha", "quantization_config")


@dataclasses.dataclass
class FactorizedLayer:
    """One factorized layer: its matrix view, chosen rank and cost."""

    name: str
    type: str
    matrix_shape: tuple[int, int]
    rank: int | tuple[int, int]
    params_before: int
    params_after: int
    squared_error: float
    relative_error: float  # ||W - W_r||_F / ||W||_F


@dataclasses.dataclass
class FactorizeReport:
    """What :func:`factorize_model` did: factorized layers, skipped layers and totals."""

    mode: str
    factorized: list[FactorizedLayer]
    skipped: list[tuple[str, str, str]]  # (name, type, reason)
    params_before: int
    params_after: int

    @property
    def param_ratio(self) -> float:
        """Parameters of the factorized model over those of the original."""
        return self.params_after / self.params_before if self.params_before else 1.0

    @property
    def total_squared_error(self) -> float:
        return float(sum(f.squared_error for f in self.factorized))

    def as_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "param_ratio": self.param_ratio,
            "total_squared_error": self.total_squared_error,
        }

    def to_string(self) -> str:
        rows = [
            [f.name, f.type, f.matrix_shape, f.rank, f.params_before, f.params_after,
             round(f.relative_error, 4)]
            for f in self.factorized
        ]  # fmt: skip
        text = format_table(
            rows,
            ["layer", "type", "matrix", "rank", "params", "factor params", "rel. error"],
            title=(
                f"factorize_model ({self.mode}): {self.params_before:,} -> "
                f"{self.params_after:,} parameters ({self.param_ratio:.3f}x)"
            ),
        )
        return text + format_skipped(self.skipped)

    def __str__(self) -> str:
        return self.to_string()


@dataclasses.dataclass
class _Candidate:
    name: str
    layer: keras.layers.Layer
    rows: int
    cols: int
    spectrum: np.ndarray
    dense_params: int  # kernel only; the bias is unchanged
    decomposition: (
        conv_decompositions.ConvDecomposition | None
    )  # None: a Dense kernel (a plain SVD)
    rank: Any = None

    @property
    def svd_based(self) -> bool:
        return self.decomposition is None or self.decomposition.svd_based

    def params(self, rank: Any) -> int:
        """Kernel parameters of the factors at ``rank``."""
        if self.decomposition is None:
            return lr.factor_params(self.rows, self.cols, rank)
        return self.decomposition.params(self.layer.kernel.shape, rank)


def _factorizable(layer: keras.layers.Layer) -> str | None:
    """None if ``layer`` can be factorized, else the reason it cannot."""
    if type(layer) not in (keras.layers.Dense, keras.layers.Conv2D):
        return (
            f"layer type {type(layer).__name__} cannot be factorized; factorize_model "
            "replaces keras.layers.Dense and keras.layers.Conv2D (exact types)"
        )
    if getattr(layer, "quantization_mode", None):
        return f"it is quantized by Keras ({layer.quantization_mode}); factorize the float model"
    if isinstance(layer, keras.layers.Conv2D) and layer.groups != 1:
        return f"grouped Conv2D (groups={layer.groups}) cannot be factorized"
    return None


def _kernel(layer: keras.layers.Layer) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(layer.kernel), dtype=np.float64)


def _check_arguments(
    rank, energy, target_ratio, decomposition: conv_decompositions.ConvDecomposition
) -> str:
    given = [n for n, v in (("rank", rank), ("energy", energy), ("target_ratio", target_ratio))
             if v is not None]  # fmt: skip
    if len(given) != 1:
        raise ValueError(
            "give exactly one of rank, energy or target_ratio, got "
            + (", ".join(given) if given else "none")
        )
    if rank is not None:
        ranks = rank.items() if isinstance(rank, Mapping) else [("rank", rank)]
        for key, value in ranks:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"rank must be an int or a dict of ints, got {key}={value!r}")
            if value < 1:
                raise ValueError(f"rank must be >= 1, got {key}={value}")
    if energy is not None:
        lr.check_energy(energy)
    if target_ratio is not None:
        if isinstance(target_ratio, bool) or not isinstance(
            target_ratio, (int, float, np.floating)
        ):
            raise TypeError(f"target_ratio must be a float in (0, 1), got {target_ratio!r}")
        if not 0.0 < float(target_ratio) < 1.0:
            raise ValueError(
                "target_ratio must be in (0, 1) (parameters of the factorized model over "
                f"the original's), got {target_ratio}"
            )
        if not decomposition.svd_based:
            raise ValueError(
                "target_ratio needs an SVD-based conv_decomposition ('channel' or 'spatial'); "
                f"got {decomposition.name!r}"
            )
    return given[0]


def factorize_model(
    model: keras.Model,
    rank: int | Mapping[str, int] | None = None,
    energy: float | None = None,
    target_ratio: float | None = None,
    layers: LayerSelection = None,
    *,
    conv_decomposition: str = "channel",
    return_report: bool = False,
    verbose: int = 1,
) -> keras.Model | tuple[keras.Model, FactorizeReport]:
    """A copy of ``model`` with Dense/Conv2D layers replaced by low-rank factors.

    Each replaced layer is initialised with the truncated SVD of its trained
    kernel (``Conv2D``: of the matrix view of ``conv_decomposition``), the
    best approximation at that rank (Eckart-Young). Give exactly one of:

    * ``rank``: the same rank for every layer, or ``{layer_name: rank}``;
    * ``energy``: per layer, the smallest rank keeping that fraction of
      ``sum s_k^2``;
    * ``target_ratio``: one global parameter budget, ``target_ratio`` times
      the model's parameters, split across layers to minimise the total
      squared approximation error (:func:`tfcompress.lowrank.decompositions.allocate_ranks`).

    Layers where the factors would not have fewer parameters than the kernel
    (rank too high for their shape, or nothing to gain) are left as they were
    and listed in the report. The user's model is not modified.

    Args:
        model: A built Sequential or Functional model (nested models included).
        rank: Fixed rank (int >= 1) or a dict ``{layer name: rank}``.
        energy: Fraction of singular-value energy to keep, in ``(0, 1]``.
        target_ratio: Parameter budget as a fraction of the model's, in ``(0, 1)``.
        layers: Which layers to consider (names, types, a predicate; default all
            Dense and Conv2D). A selected layer of another type is an error.
        conv_decomposition: ``"channel"``, ``"spatial"``, ``"tucker2"`` or ``"cp"``
            (see :class:`~tfcompress.layers.LowRankConv2D`; ``"tucker2"`` and
            ``"cp"`` with ``rank`` or ``energy`` only: for ``"cp"``, ``rank`` is
            clipped to the largest CP rank the kernel can have and ``energy`` is
            the ALS fit ``1 - ||K - K_R||^2 / ||K||^2``, see
            :meth:`~tfcompress.lowrank.conv_decompositions.CP.choose_rank`).
        return_report: Also return a :class:`FactorizeReport`.
        verbose: 1 prints the report, 0 is silent.

    Returns:
        The factorized model (uncompiled), or ``(model, report)``.

    Raises:
        ValueError: Not exactly one of rank/energy/target_ratio; ``rank < 1``;
            ``energy`` outside (0, 1]; ``target_ratio`` outside (0, 1) or below
            what rank 1 everywhere needs; a ``layers`` selection matching
            nothing; no layer that factorizing would make smaller.
        TypeError: A selected layer of a type that cannot be factorized (named
            in the message); a subclassed model.

    Example:
        >>> small, report = tfc.factorize_model(model, target_ratio=0.5, return_report=True)
        >>> report.param_ratio  # <= 0.5
        >>> tfc.models.train_classifier(small, data, epochs=3)  # short fine-tune
    """
    decomposition = conv_decompositions.conv_decomposition(conv_decomposition, "conv_decomposition")
    mode = _check_arguments(rank, energy, target_ratio, decomposition)
    if isinstance(rank, Mapping) and layers is None:
        leaves = list(walk_layers(model))
        unknown = [k for k in rank if not any(k in (q, x.name) for q, x in leaves)]
        if unknown:
            raise ValueError(
                f"rank names layers that model {model.name!r} does not have: {unknown}; "
                f"its layers are: {', '.join(q for q, _ in leaves)}"
            )
        named = {id(x) for q, x in leaves if q in rank or x.name in rank}
        layers = lambda layer: id(layer) in named  # noqa: E731
    selector = layer_selector(layers, model)
    explicit = layers is not None

    candidates: list[_Candidate] = []
    skipped: list[tuple[str, str, str]] = []
    seen: set[int] = set()
    for name, layer in walk_layers(model):
        if id(layer) in seen or not selector(layer) or not layer.weights:
            continue
        seen.add(id(layer))
        reason = _factorizable(layer)
        if reason is not None:
            if explicit:
                raise TypeError(f"cannot factorize layer {name!r}: {reason}")
            skipped.append((name, type(layer).__name__, reason))
            continue
        scheme = decomposition if isinstance(layer, keras.layers.Conv2D) else None
        # Tucker-2 is not an SVD of one matrix; its channel view has the same norm.
        view = (
            scheme if scheme is not None and scheme.svd_based else conv_decompositions.ChannelSVD()
        )
        matrix = _kernel(layer) if scheme is None else view.matrix(_kernel(layer))
        candidates.append(
            _Candidate(
                name=name,
                layer=layer,
                rows=matrix.shape[0],
                cols=matrix.shape[1],
                spectrum=np.linalg.svd(matrix, compute_uv=False),
                dense_params=int(matrix.size),
                decomposition=scheme,
            )
        )

    chosen = _choose_ranks(model, candidates, skipped, mode, rank, energy, target_ratio)
    if not chosen:
        value = {"rank": rank, "energy": energy, "target_ratio": target_ratio}[mode]
        details = "; ".join(f"{n}: {why}" for n, _, why in skipped) or "no Dense/Conv2D layer"
        raise ValueError(
            f"factorize_model({mode}={value!r}) found no layer that factorizing "
            f"would make smaller ({details})"
        )

    errors: dict[str, float] = {}

    def replace(layer: keras.layers.Layer) -> Replacement | None:
        cand = chosen.get(id(layer))
        if cand is None:
            return None
        config = layer.get_config()
        if isinstance(layer, keras.layers.Dense):
            for key in _DENSE_ONLY_KEYS:
                config.pop(key, None)
            new: keras.layers.Layer = LowRankDense.from_config({**config, "rank": cand.rank})
        else:
            new = LowRankConv2D.from_config(
                {**config, "rank": cand.rank, "decomposition": decomposition}
            )

        def initialize(new_layer, old_layer, name=cand.name):
            bias = old_layer.bias if old_layer.use_bias else None
            errors[name] = new_layer.set_kernel(old_layer.kernel, bias)

        return Replacement(new, initialize)

    new_model, _ = rewrite_model(model, replace)
    report = FactorizeReport(
        mode=mode,
        factorized=[
            FactorizedLayer(
                name=c.name,
                type=type(c.layer).__name__,
                matrix_shape=(c.rows, c.cols),
                rank=c.rank,
                params_before=c.dense_params,
                params_after=c.params(c.rank),
                squared_error=errors[c.name],
                relative_error=float(np.sqrt(errors[c.name] / max(np.sum(c.spectrum**2), 1e-30))),
            )
            for c in chosen.values()
        ],
        skipped=skipped,
        params_before=int(model.count_params()),
        params_after=int(new_model.count_params()),
    )
    if verbose:
        print(report.to_string())
    return (new_model, report) if return_report else new_model


def _rank_for(rank: int | Mapping[str, int], cand: _Candidate) -> int | None:
    """The fixed rank of a layer; a dict may name it by qualified ("outer/inner") or own name."""
    if not isinstance(rank, Mapping):
        return rank
    return rank.get(cand.name, rank.get(cand.layer.name))


def _choose_ranks(
    model, candidates, skipped, mode, rank, energy, target_ratio
) -> dict[int, _Candidate]:
    """Sets ``rank`` on the candidates worth factorizing; the rest go to ``skipped``."""
    chosen: dict[int, _Candidate] = {}
    if mode == "target_ratio":
        useful = []
        for c in candidates:
            if lr.max_useful_rank(c.rows, c.cols) < 1:
                skipped.append((c.name, type(c.layer).__name__, "no rank has fewer parameters"))
            else:
                useful.append(c)
        if not useful:
            return chosen
        total = int(model.count_params())
        fixed = total - sum(c.dense_params for c in useful)
        budget = int(target_ratio * total) - fixed
        minimum = sum(c.rows + c.cols for c in useful)
        if budget < minimum:
            raise ValueError(
                f"target_ratio={target_ratio} is unreachable: rank 1 in every factorizable "
                f"layer already gives {(fixed + minimum) / total:.4f}x the parameters"
            )
        ranks = lr.allocate_ranks(
            [c.spectrum for c in useful],
            [c.rows + c.cols for c in useful],
            budget,
            max_ranks=[lr.max_useful_rank(c.rows, c.cols) for c in useful],
        )
        for c, r in zip(useful, ranks):
            c.rank = r
            chosen[id(c.layer)] = c
        return chosen

    for c in candidates:
        kind = type(c.layer).__name__
        if not c.svd_based:  # ranks per mode, chosen by the decomposition itself
            value = None if mode == "energy" else _rank_for(rank, c)
            if mode == "rank" and value is None:
                continue
            c.rank = c.decomposition.choose_rank(_kernel(c.layer), value, energy)
            after = c.params(c.rank)
            if after >= c.dense_params:
                skipped.append((c.name, kind, f"{c.decomposition.name} ranks {c.rank} need "
                                f"{after} >= {c.dense_params} parameters"))  # fmt: skip
                continue
            chosen[id(c.layer)] = c
            continue
        limit = min(c.rows, c.cols)
        if mode == "rank":
            r = _rank_for(rank, c)
            if r is None:
                continue
            if r >= limit:
                skipped.append((c.name, kind, f"rank {r} >= min(in, out) = {limit}"))
                continue
        else:
            r = lr.energy_rank(c.spectrum, energy)
        after = c.params(r)
        if after >= c.dense_params:
            skipped.append(
                (c.name, kind, f"rank {r} needs {after} >= {c.dense_params} kernel parameters")
            )
            continue
        c.rank = r
        chosen[id(c.layer)] = c
    return chosen


def _stock_stages(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Stock Keras layers computing the same chain as a LowRank* layer (bias/activation last)."""
    common = {"dtype": layer.dtype_policy, "trainable": layer.trainable}
    if isinstance(layer, LowRankDense):
        return [
            keras.layers.Dense(layer.rank, use_bias=False, name=f"{layer.name}_a", **common),
            keras.layers.Dense(
                layer.units, activation=layer.activation, use_bias=layer.use_bias,
                name=f"{layer.name}_b", **common,
            ),
        ]  # fmt: skip
    stages = layer.stages()
    padding, split = layer.padding, None
    if any(s.depthwise and s.strides[0] != s.strides[1] for s in stages):
        # CP's kh x 1 / 1 x kw stages at equal strides, which TensorFlow's CPU depthwise kernel
        # needs without oneDNN; left as they are (fine in TFLite, JAX, oneDNN) if impossible.
        shape = layer._built_input_shape
        hw = tuple(shape[1:3]) if layer.data_format == "channels_last" else tuple(shape[2:4])
        split = axis_conv.equal_stride_split(
            layer.strides, layer.kernel_size, layer.dilation_rate, layer.padding, hw
        )
        if isinstance(split, str):
            split = None
        else:
            stages = [
                s._replace(strides=split.vertical_strides if s.name == "kernel_h" else
                           split.horizontal_strides) if s.depthwise else s
                for s in stages
            ]  # fmt: skip
            padding = split.padding
    out = []
    for i, stage in enumerate(stages):
        last = i == len(stages) - 1
        if split is not None and stage.name == "kernel_h" and split.pads != ((0, 0), (0, 0)):
            out.append(
                keras.layers.ZeroPadding2D(
                    split.pads, data_format=layer.data_format, name=f"{layer.name}_pad", **common
                )
            )
        shared = {
            "strides": stage.strides, "padding": padding,
            "data_format": layer.data_format, "dilation_rate": stage.dilation,
            "activation": layer.activation if last else None,
            "use_bias": layer.use_bias if last else False,
            "name": f"{layer.name}_{stage.name.removeprefix('kernel_')}", **common,
        }  # fmt: skip
        if stage.depthwise:
            out.append(
                keras.layers.DepthwiseConv2D(
                    stage.shape[:2], depth_multiplier=stage.shape[3], **shared
                )
            )
        else:
            out.append(keras.layers.Conv2D(stage.shape[3], stage.shape[:2], **shared))
    return out


def expand_lowrank(model: keras.Model) -> keras.Model:
    """A copy of ``model`` where each LowRank* layer is a nested Sequential of stock layers.

    ``LowRankDense`` becomes ``Dense(rank, use_bias=False)`` then
    ``Dense(units, activation)``; ``LowRankConv2D`` its chain of ``Conv2D``
    (``"cp"``: and ``DepthwiseConv2D``) layers; the weights are the factors. The outputs are unchanged. This lets
    transforms that know only stock layers act on the factors, e.g.
    ``tfc.quantize_model(expand_lowrank(small))`` for low-rank + QAT int8.

    Args:
        model: A built Sequential or Functional model.

    Returns:
        The expanded model (uncompiled).

    Raises:
        ValueError: If the model has no LowRankDense/LowRankConv2D layer.
        TypeError: For subclassed models.

    Example:
        >>> small = tfc.factorize_model(model, target_ratio=0.5)
        >>> qat = tfc.quantize_model(tfc.transforms.expand_lowrank(small))
    """
    if not any(isinstance(x, (LowRankDense, LowRankConv2D)) for _, x in walk_layers(model)):
        raise ValueError(f"model {model.name!r} has no LowRankDense or LowRankConv2D layer")

    def replace(layer: keras.layers.Layer) -> Replacement | None:
        if not isinstance(layer, (LowRankDense, LowRankConv2D)):
            return None
        chain = keras.Sequential(_stock_stages(layer), name=layer.name)

        def initialize(new, old):
            stages = [x for x in new.layers if hasattr(x, "kernel")]  # not the ZeroPadding2D
            for stage, kernel in zip(stages, [v for v in old.weights if v is not old.bias]):
                stage.kernel.assign(kernel)
            if old.bias is not None:
                stages[-1].bias.assign(old.bias)

        return Replacement(chain, initialize)

    return rewrite_model(model, replace)[0]
