"""Pruning mask math in NumPy: which weights to zero, for every granularity and scope.

Masks change only on a pruning schedule (a few times per epoch), so they are
computed offline in NumPy with exact counts (a stable sort, not a threshold
that ties can overshoot); the compiled train step only multiplies by them.

Every weight is seen through a 2-D *matrix view* ``(K, C)``: the channel axes
(the output channels) last, everything else (the reduction axis the kernel
sums over) flattened into ``K``. A Dense kernel ``(in, out)`` is its own view;
a Conv2D kernel ``(kh, kw, in, out)`` becomes ``(kh*kw*in, out)``, so ``K``
runs fastest along the input channels, the axis N:M sparse kernels group on.

Granularities prune *units*: elements (unstructured, N:M), ``block_shape``
tiles of the matrix view (block), or whole output channels (channel).
A criterion turns a weight (and optionally its gradient) into per-element
*contributions* and reduces a unit's contributions to one importance score.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence

import keras
import numpy as np

from tfcompress.pruning.validation import check_fraction

__all__ = [
    "GRANULARITIES",
    "Granularity",
    "MagnitudeCriterion",
    "PruningCriterion",
    "TaylorCriterion",
    "compute_masks",
    "erk_sparsities",
    "get_criterion",
    "matrix_view",
    "parse_granularity",
    "register_criterion",
    "rigl_update",
    "validate_sparsity",
]

GRANULARITIES = ("unstructured", "block", "channel", "head", "N:M (e.g. '2:4')")
_NM_PATTERN = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def validate_sparsity(value: float, name: str = "sparsity") -> float:
    """Returns ``value`` as a float in [0, 1) or raises ValueError naming ``name``.

    Strings are refused like everywhere in the pruning package
    (:func:`tfcompress.pruning.validation.check_fraction`).
    """
    return check_fraction(name, value)


@dataclasses.dataclass(frozen=True)
class Granularity:
    """A parsed pruning granularity.

    Attributes:
        kind: ``"unstructured"``, ``"block"``, ``"channel"``, ``"head"`` (whole
            attention heads, see :mod:`tfcompress.pruning.heads`) or ``"n:m"``.
        block_shape: Tile of the matrix view pruned together (block only).
        n: Weights kept in every group (N:M only).
        m: Group size along the reduction axis (N:M only).
    """

    kind: str
    block_shape: tuple[int, int] = (1, 1)
    n: int = 0
    m: int = 0

    @property
    def max_sparsity(self) -> float:
        """The highest sparsity the pattern allows (``1 - N/M`` for N:M)."""
        return 1.0 - self.n / self.m if self.kind == "n:m" else 1.0

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.kind == "n:m" else self.kind


def parse_granularity(
    granularity: str | Granularity, block_shape: Sequence[int] | None = None
) -> Granularity:
    """Parses ``"unstructured"``, ``"block"``, ``"channel"``, ``"head"`` or an ``"N:M"`` string.

    Raises:
        ValueError: For an unknown name, a malformed or impossible N:M string
            (needs 0 < N < M), or a bad ``block_shape``.
    """
    if isinstance(granularity, Granularity):
        return granularity
    if not isinstance(granularity, str):
        raise ValueError(
            f"granularity must be a string, one of {GRANULARITIES}, got {granularity!r}"
        )
    name = granularity.strip().lower()
    if ":" in name:
        match = _NM_PATTERN.match(name)
        if not match:
            raise ValueError(
                f"granularity={granularity!r} is not a valid N:M string; expected two "
                "integers like '2:4' (keep N weights in every group of M)"
            )
        n, m = int(match.group(1)), int(match.group(2))
        if not 0 < n < m:
            raise ValueError(
                f"granularity={granularity!r}: N:M needs 0 < N < M (e.g. '2:4'), got N={n}, M={m}"
            )
        return Granularity("n:m", n=n, m=m)
    if name == "block":
        shape = tuple(block_shape) if block_shape is not None else (1, 4)
        if len(shape) != 2 or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in shape):
            raise ValueError(
                f"block_shape must be two positive integers (rows of K, columns of C), "
                f"got {block_shape!r}"
            )
        return Granularity("block", block_shape=(int(shape[0]), int(shape[1])))
    if name in ("unstructured", "channel", "head"):
        return Granularity(name)
    if name == "filter":
        return Granularity("channel")
    raise ValueError(
        f"granularity={granularity!r} is not supported; expected one of {GRANULARITIES}"
    )


def matrix_view(weight: np.ndarray, channel_axes: Sequence[int] | None) -> np.ndarray:
    """The ``(K, C)`` view of ``weight``: channel axes last and flattened into C."""
    if channel_axes is None:
        channel_axes = (weight.ndim - 1,)
    axes = sorted(a % weight.ndim for a in channel_axes)
    moved = np.moveaxis(weight, axes, list(range(weight.ndim - len(axes), weight.ndim)))
    channels = math.prod(weight.shape[a] for a in axes)
    return moved.reshape(-1, channels)


def _from_matrix_view(
    matrix: np.ndarray, shape: tuple[int, ...], channel_axes: Sequence[int] | None
) -> np.ndarray:
    ndim = len(shape)
    if channel_axes is None:
        channel_axes = (ndim - 1,)
    axes = sorted(a % ndim for a in channel_axes)
    rest = [a for a in range(ndim) if a not in axes]
    moved_shape = [shape[a] for a in rest] + [shape[a] for a in axes]
    moved = matrix.reshape(moved_shape)
    return np.moveaxis(moved, list(range(ndim - len(axes), ndim)), axes)


# --------------------------------------------------------------------------- criteria


@keras.saving.register_keras_serializable(package="tfcompress")
class PruningCriterion:
    """How important a weight (or a group of weights) is; the least important are pruned.

    Subclass and override :meth:`contributions` and :meth:`reduce` to plug in
    a criterion; set ``needs_gradients = True`` to receive the loss gradient.
    A criterion that needs several gradients (second-order ones, e.g.
    M-FAC) sets ``gradient_samples = m`` (and ``gradient_batch_size``, the
    examples per gradient; None: the caller's default): it then receives a
    stack of shape ``(m, *weight.shape)``, one mini-batch gradient per row.

    Example:
        >>> class Random(PruningCriterion):
        ...     def contributions(self, weight, gradient=None):
        ...         return np.random.default_rng(0).random(weight.shape)
    """

    needs_gradients: bool = False
    gradient_samples: int = 1
    gradient_batch_size: int | None = None

    def contributions(self, weight: np.ndarray, gradient: np.ndarray | None = None) -> np.ndarray:
        """Per-element contributions, the same shape as ``weight``."""
        raise NotImplementedError

    def reduce(self, values: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray:
        """One score per unit from its elements' contributions (default: sum of |x|)."""
        return np.sum(np.abs(values), axis=axis)

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict) -> PruningCriterion:
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfcompress")
class MagnitudeCriterion(PruningCriterion):
    """Weight magnitude: element score ``|w|``; a channel or block scores ``sum |w|`` (L1).

    Example:
        >>> MagnitudeCriterion().contributions(np.array([-2.0, 1.0]))
        array([-2.,  1.])
    """

    def contributions(self, weight: np.ndarray, gradient: np.ndarray | None = None) -> np.ndarray:
        return weight


@keras.saving.register_keras_serializable(package="tfcompress")
class TaylorCriterion(PruningCriterion):
    """First-order Taylor importance: the loss change if a group of weights were removed.

    A unit's score is ``(sum over its weights of w * dL/dw) ** 2`` (Molchanov
    et al., 2019); for single weights this is ``(w * g) ** 2``.

    References:
        Molchanov, Mallya, Tyree, Frosio, Kautz. "Importance Estimation for
        Neural Network Pruning", CVPR 2019.
    """

    needs_gradients = True

    def contributions(self, weight: np.ndarray, gradient: np.ndarray | None = None) -> np.ndarray:
        if gradient is None:
            raise ValueError(
                "TaylorCriterion needs the loss gradient of every pruned weight; give the "
                "pruning callback data=(x, y) to compute it"
            )
        return weight * gradient

    def reduce(self, values: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray:
        return np.square(np.sum(values, axis=axis))


_CRITERIA = {"magnitude": MagnitudeCriterion, "taylor": TaylorCriterion}


def register_criterion(name: str, factory: type[PruningCriterion]) -> None:
    """Makes ``get_criterion(name)`` return ``factory()`` (e.g. ``"mfac"``)."""
    _CRITERIA[name.lower()] = factory


def get_criterion(criterion: str | PruningCriterion) -> PruningCriterion:
    """A criterion by name (``"magnitude"``, ``"taylor"``, ``"mfac"``, ...) or instance.

    Raises:
        ValueError: For an unknown name or object.
    """
    if isinstance(criterion, PruningCriterion):
        return criterion
    if isinstance(criterion, str) and criterion.lower() in _CRITERIA:
        return _CRITERIA[criterion.lower()]()
    raise ValueError(
        f"criterion must be one of {sorted(_CRITERIA)} or a PruningCriterion instance, "
        f"got {criterion!r}"
    )


# --------------------------------------------------------------------------- units


@dataclasses.dataclass
class _Units:
    """One weight cut into prunable units."""

    scores: np.ndarray  # (U,) importance; +inf never pruned
    sizes: np.ndarray  # (U,) real elements per unit
    expand: object  # callable: keep (U,) bool -> element mask of the weight's shape


def _units(
    contributions: np.ndarray,
    channel_axes: Sequence[int] | None,
    granularity: Granularity,
    criterion: PruningCriterion,
) -> _Units:
    shape = contributions.shape
    view = matrix_view(contributions, channel_axes)
    k, c = view.shape

    def to_weight(matrix_mask: np.ndarray) -> np.ndarray:
        return _from_matrix_view(matrix_mask, shape, channel_axes).astype(np.float32)

    if granularity.kind == "unstructured":
        scores = criterion.reduce(view[..., None], axis=-1).ravel()
        return _Units(scores, np.ones(k * c), lambda keep: to_weight(keep.reshape(k, c)))

    if granularity.kind == "channel":
        scores = criterion.reduce(view, axis=0)
        return _Units(scores, np.full(c, k), lambda keep: to_weight(np.broadcast_to(keep, (k, c))))

    if granularity.kind == "block":
        bk, bc = granularity.block_shape
        pk, pc = -k % bk, -c % bc
        padded = np.pad(view, ((0, pk), (0, pc)))
        real = np.pad(np.ones_like(view, dtype=bool), ((0, pk), (0, pc)))
        nk, nc = padded.shape[0] // bk, padded.shape[1] // bc
        tiles = padded.reshape(nk, bk, nc, bc)
        scores = criterion.reduce(tiles, axis=(1, 3)).ravel()
        sizes = real.reshape(nk, bk, nc, bc).sum(axis=(1, 3)).ravel()

        def expand_blocks(keep: np.ndarray) -> np.ndarray:
            full = np.repeat(np.repeat(keep.reshape(nk, nc), bk, axis=0), bc, axis=1)
            return to_weight(full[:k, :c])

        return _Units(scores, sizes, expand_blocks)

    # N:M: per element, but the top N of every group of M along K are protected.
    n, m = granularity.n, granularity.m
    scores = criterion.reduce(view[..., None], axis=-1).astype(np.float64)
    pk = -k % m
    padded = np.pad(scores, ((0, pk), (0, 0)), constant_values=-np.inf)
    groups = padded.reshape(-1, m, c)
    # Rank inside each group, stable (lower index wins ties).
    order = np.argsort(-groups, axis=1, kind="stable")
    ranks = np.argsort(order, axis=1, kind="stable")
    protected = (ranks < n).reshape(-1, c)[:k]
    scores = np.where(protected, np.inf, scores).ravel()
    return _Units(scores, np.ones(k * c), lambda keep: to_weight(keep.reshape(k, c)))


def _prune_lowest(scores: np.ndarray, sizes: np.ndarray, budget: int) -> np.ndarray:
    """Keep-mask over units: prune the lowest-score units while their sizes fit ``budget``."""
    order = np.argsort(scores, kind="stable")
    prunable = order[np.isfinite(scores[order]) | (scores[order] < 0)]
    cumulative = np.cumsum(sizes[prunable])
    count = int(np.searchsorted(cumulative, budget, side="right"))
    keep = np.ones(scores.shape, bool)
    keep[prunable[:count]] = False
    return keep


def compute_masks(
    weights: Sequence[np.ndarray],
    sparsity: float,
    granularity: str | Granularity = "unstructured",
    *,
    channel_axes: Sequence[Sequence[int] | None] | None = None,
    scope: str = "layer",
    criterion: str | PruningCriterion = "magnitude",
    gradients: Sequence[np.ndarray | None] | None = None,
    block_shape: Sequence[int] | None = None,
) -> list[np.ndarray]:
    """0/1 masks (float32, the weights' shapes) that prune ``sparsity`` of each weight.

    Per layer (``scope="layer"``) every weight loses exactly
    ``round(sparsity * units)`` units (elements, blocks or channels). With
    ``scope="global"`` one ranking spans all weights and exactly
    ``round(sparsity * total elements)`` elements are pruned (as near as whole
    blocks/channels allow); channel scores are divided by their layer's mean
    first so layers of different width compare, and every layer keeps at
    least one channel. N:M prunes ``sparsity / (1 - N/M)`` of the weights
    outside each group's top N, so at ``sparsity == 1 - N/M`` every full
    group of M along K holds exactly N non-zeros.

    Args:
        weights: The weight arrays.
        sparsity: Fraction to prune, in [0, 1) (N:M: at most ``1 - N/M``).
        granularity: ``"unstructured"``, ``"block"``, ``"channel"`` or ``"N:M"``.
        channel_axes: Per weight, its output-channel axes (None: last axis).
        scope: ``"layer"`` or ``"global"``.
        criterion: A criterion name (``"magnitude"``, ``"taylor"``, ``"mfac"``)
            or a :class:`PruningCriterion`.
        gradients: Loss gradients, one per weight, for gradient criteria
            (a ``(m, *shape)`` stack per weight for a criterion with
            ``gradient_samples = m``).
        block_shape: Tile shape of the matrix view for ``"block"``.

    Returns:
        One mask per weight.

    Raises:
        ValueError: For a sparsity outside [0, 1) or above the N:M limit, an
            unknown scope, granularity or criterion, or global N:M.

    Example:
        >>> (mask,) = compute_masks([np.arange(1.0, 9.0).reshape(4, 2)], 0.5, "2:4")
        >>> mask[:, 0]
        array([0., 0., 1., 1.], dtype=float32)
    """
    sparsity = validate_sparsity(sparsity)
    spec = parse_granularity(granularity, block_shape)
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    if spec.kind == "n:m" and sparsity > spec.max_sparsity + 1e-9:
        raise ValueError(
            f"sparsity={sparsity} is above what granularity '{spec}' allows "
            f"({spec.max_sparsity:g} = 1 - N/M)"
        )
    if spec.kind == "n:m" and scope == "global":
        raise ValueError("scope='global' has no meaning for N:M granularity; use scope='layer'")
    if spec.kind == "head":
        raise ValueError(
            "granularity='head' prunes the four projections of an attention layer together: "
            "use GradualPruning(granularity='head') or tfcompress.pruning.heads.head_masks"
        )
    judge = get_criterion(criterion)
    count = len(weights)
    axes = list(channel_axes) if channel_axes is not None else [None] * count
    grads = list(gradients) if gradients is not None else [None] * count
    arrays = [np.asarray(w, np.float64) for w in weights]
    units = [
        _units(
            judge.contributions(w, None if g is None else np.asarray(g, np.float64)),
            a,
            spec,
            judge,
        )
        for w, a, g in zip(arrays, axes, grads)
    ]
    fraction = sparsity / spec.max_sparsity if spec.kind == "n:m" else sparsity

    if scope == "layer":
        masks = []
        for unit in units:
            if spec.kind == "n:m":
                candidates = int(np.sum(np.isfinite(unit.scores)))
                budget = round(fraction * candidates)
            else:
                budget = round(sparsity * len(unit.scores)) * int(unit.sizes.max(initial=1))
                if spec.kind == "block":
                    budget = _block_budget(unit, sparsity)
            masks.append(unit.expand(_prune_lowest(unit.scores, unit.sizes, budget)))
        return masks

    scores = []
    for unit in units:
        score = unit.scores.astype(np.float64)
        if spec.kind == "channel":
            mean = float(np.mean(score)) or 1.0
            score = score / mean
            score[int(np.argmax(score))] = np.inf  # every layer keeps a channel
        scores.append(score)
    flat_scores = np.concatenate(scores)
    flat_sizes = np.concatenate([u.sizes for u in units])
    total = sum(w.size for w in arrays)
    keep = _prune_lowest(flat_scores, flat_sizes, round(sparsity * total))
    splits = np.cumsum([len(s) for s in scores])[:-1]
    return [u.expand(k) for u, k in zip(units, np.split(keep, splits))]


def _block_budget(unit: _Units, sparsity: float) -> int:
    # Prune round(s * blocks) whole blocks; the budget is their element count
    # taken from the lowest-score blocks, so partial edge blocks count right.
    blocks = round(sparsity * len(unit.scores))
    order = np.argsort(unit.scores, kind="stable")
    return int(np.sum(unit.sizes[order[:blocks]]))


# --------------------------------------------------------------------------- sparse training


def erk_sparsities(
    shapes: Sequence[tuple[int, ...]], sparsity: float, power_scale: float = 1.0
) -> list[float]:
    """Per-layer sparsities of the Erdos-Renyi-Kernel distribution (Evci et al., 2020).

    A layer's density is proportional to ``sum(shape) / prod(shape)`` (small
    layers stay denser); layers that would exceed density 1 are kept dense and
    the rest rescaled, so the overall sparsity equals ``sparsity``.

    Example:
        >>> s = erk_sparsities([(3, 3, 1, 32), (4096, 128)], 0.9)
        >>> s[0] < 0.9 < s[1]
        True
    """
    sparsity = validate_sparsity(sparsity)
    sizes = np.array([math.prod(s) for s in shapes], np.float64)
    raw = np.array([(sum(s) / math.prod(s)) ** power_scale for s in shapes], np.float64)
    dense = np.zeros(len(shapes), bool)
    target_nonzeros = (1 - sparsity) * sizes.sum()
    while True:
        free = ~dense
        budget = target_nonzeros - sizes[dense].sum()
        epsilon = budget / float(np.sum(raw[free] * sizes[free]))
        density = np.where(dense, 1.0, epsilon * raw)
        over = free & (density > 1.0)
        if not over.any():
            break
        dense |= over
    return [float(1.0 - d) for d in density]


def rigl_update(
    mask: np.ndarray, weight: np.ndarray, gradient: np.ndarray, drop_fraction: float
) -> np.ndarray:
    """One RigL step: drop the smallest active weights, regrow by gradient magnitude.

    ``round(drop_fraction * active)`` active connections with the smallest
    ``|w|`` are dropped; as many inactive ones (just-dropped excluded) with the
    largest ``|gradient|`` are grown, so the count of active weights is kept.

    References:
        Evci, Gale, Menick, Castro, Elsen. "Rigging the Lottery: Making All
        Tickets Winners", ICML 2020.
    """
    mask = np.asarray(mask) > 0
    active = int(mask.sum())
    inactive = mask.size - active
    count = min(round(drop_fraction * active), inactive)
    if count <= 0:
        return mask.astype(np.float32)
    flat_mask = mask.ravel()
    magnitude = np.where(flat_mask, np.abs(np.asarray(weight, np.float64)).ravel(), np.inf)
    drop = np.argsort(magnitude, kind="stable")[:count]
    growth = np.where(flat_mask, -np.inf, np.abs(np.asarray(gradient, np.float64)).ravel())
    grow = np.argsort(-growth, kind="stable")[:count]
    new = flat_mask.copy()
    new[drop] = False
    new[grow] = True
    return new.reshape(mask.shape).astype(np.float32)
