"""Conv2D kernel decompositions as objects: channel SVD, spatial SVD, Tucker-2 and CP.

A :class:`ConvDecomposition` knows the shape of its chain of convolutions,
how to compute the factors from a trained kernel and how to compose them
back. :class:`~tfcompress.lowrank.conv.LowRankConv2D` and
:func:`~tfcompress.lowrank.factorize.factorize_model` resolve the name they
are given (``"channel"``, ``"spatial"``, ``"tucker2"``, ``"cp"``) once, with
:func:`conv_decomposition`, and then only call methods: a new decomposition
is one new class here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from tfcompress.lowrank.cp import cp_als, cp_max_useful_rank, cp_rank_bound
from tfcompress.lowrank.decompositions import (
    check_energy,
    check_rank,
    check_rank_arg,
    energy_rank,
    truncated_svd,
    tucker2,
)

__all__ = [
    "CONV_DECOMPOSITIONS",
    "CP",
    "ChannelSVD",
    "ConvDecomposition",
    "SpatialSVD",
    "Stage",
    "Tucker2",
    "conv_decomposition",
]


class Stage(NamedTuple):
    """One convolution of a chain.

    Attributes:
        name: The weight's name (``"kernel_a"``, ...).
        shape: The kernel's shape: ``(kh, kw, in, out)`` for a full convolution,
            ``(kh, kw, in, multiplier)`` (Keras' layout) for a depthwise one.
        strides: Its strides.
        dilation: Its dilation rate.
        depthwise: ``True`` for a depthwise convolution (each input channel
            filtered on its own: ``kh * kw * in * multiplier`` weights and as
            many MACs per output position).
    """

    name: str
    shape: tuple[int, int, int, int]
    strides: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    depthwise: bool = False

    @property
    def filters(self) -> int:
        """Output channels."""
        return self.shape[2] * self.shape[3] if self.depthwise else self.shape[3]


class ConvDecomposition:
    """One way to store a ``(kh, kw, cin, filters)`` Conv2D kernel as a chain of convolutions.

    Subclasses say how the chain looks (:meth:`stages`), how to compute its
    factors from a trained kernel (:meth:`factors`) and back (:meth:`compose`),
    and which matrix's spectrum measures the kernel (:meth:`matrix`). Resolve
    one from its name with :func:`conv_decomposition`; nothing else compares
    decomposition names.

    Attributes:
        name: The name used in configs and ``factorize_model(conv_decomposition=...)``.
        svd_based: ``True`` when the factors are a truncated SVD of
            :meth:`matrix`, so a rank costs ``rank * (rows + cols)`` and the
            global budget allocation applies.
    """

    name: str = ""
    svd_based: bool = True

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def normalize_rank(self, rank: Any) -> int | tuple[int, int]:
        """Checks a rank argument's type and sign (its upper limit is checked at build)."""
        return check_rank_arg(rank)

    def matrix(self, kernel: np.ndarray) -> np.ndarray:
        """The 2-D view of the kernel whose singular values rank choices are made from."""
        raise NotImplementedError

    def check_rank(self, rank: Any, kernel_shape: Sequence[int]) -> None:
        """Raises ``ValueError`` if ``rank`` does not fit a kernel of this shape."""
        check_rank(rank, *self._matrix_shape(kernel_shape))

    def _matrix_shape(self, kernel_shape: Sequence[int]) -> tuple[int, int]:
        return self.matrix(np.empty(tuple(kernel_shape))).shape  # type: ignore[return-value]

    def stages(
        self,
        kernel_shape: Sequence[int],
        rank: Any,
        strides: tuple[int, int] = (1, 1),
        dilation: tuple[int, int] = (1, 1),
    ) -> list[Stage]:
        """The convolutions of the chain, in order; strides and dilation go to the spatial ones."""
        raise NotImplementedError

    def factors(self, kernel: np.ndarray, rank: Any) -> list[np.ndarray]:
        """The best factors (in stage order) of a trained kernel at ``rank``."""
        raise NotImplementedError

    def compose(self, factors: Sequence[np.ndarray]) -> np.ndarray:
        """The ``(kh, kw, cin, filters)`` kernel a chain of factors computes."""
        raise NotImplementedError

    def params(self, kernel_shape: Sequence[int], rank: Any) -> int:
        """Weights of the chain (bias excluded)."""
        return sum(math.prod(stage.shape) for stage in self.stages(kernel_shape, rank))

    def choose_rank(self, kernel: np.ndarray, rank: int | None, energy: float | None) -> Any:
        """The rank for a fixed ``rank``, or the smallest keeping ``energy`` of the spectrum."""
        if energy is None:
            return rank
        return energy_rank(np.linalg.svd(self.matrix(kernel), compute_uv=False), energy)


class ChannelSVD(ConvDecomposition):
    """``kh x kw`` conv to ``rank`` channels, then ``1 x 1`` to ``filters``.

    The truncated SVD of the kernel viewed as a ``(kh*kw*cin, filters)``
    matrix (Zhang et al., TPAMI 2016): ``rank * (kh*kw*cin + filters)`` weights.
    """

    name = "channel"

    def matrix(self, kernel: np.ndarray) -> np.ndarray:
        kh, kw, cin, f = kernel.shape
        return kernel.reshape(kh * kw * cin, f)

    def stages(self, kernel_shape, rank, strides=(1, 1), dilation=(1, 1)) -> list[Stage]:
        kh, kw, cin, f = kernel_shape
        return [
            Stage("kernel_a", (kh, kw, cin, rank), tuple(strides), tuple(dilation)),
            Stage("kernel_b", (1, 1, rank, f)),
        ]

    def factors(self, kernel: np.ndarray, rank: Any) -> list[np.ndarray]:
        kh, kw, cin, f = kernel.shape
        a, b = truncated_svd(self.matrix(kernel), rank)
        return [a.reshape(kh, kw, cin, rank), b.reshape(1, 1, rank, f)]

    def compose(self, factors: Sequence[np.ndarray]) -> np.ndarray:
        a, b = factors
        return np.einsum("hwcr,rf->hwcf", a, b[0, 0])


class SpatialSVD(ConvDecomposition):
    """``kh x 1`` conv to ``rank`` channels, then ``1 x kw`` to ``filters``.

    Jaderberg et al.'s scheme 2 (BMVC 2014): the truncated SVD of the kernel
    viewed as a ``(kh*cin, kw*filters)`` matrix, rows ``(i, c)`` and columns
    ``(j, f)``: ``W[i, j, c, f] = sum_k V[i, c, k] H[j, k, f]``.
    ``rank * (kh*cin + kw*filters)`` weights.
    """

    name = "spatial"

    def matrix(self, kernel: np.ndarray) -> np.ndarray:
        kh, kw, cin, f = kernel.shape
        return kernel.transpose(0, 2, 1, 3).reshape(kh * cin, kw * f)

    def stages(self, kernel_shape, rank, strides=(1, 1), dilation=(1, 1)) -> list[Stage]:
        kh, kw, cin, f = kernel_shape
        (sh, sw), (dh, dw) = strides, dilation
        return [
            Stage("kernel_a", (kh, 1, cin, rank), (sh, 1), (dh, 1)),
            Stage("kernel_b", (1, kw, rank, f), (1, sw), (1, dw)),
        ]

    def factors(self, kernel: np.ndarray, rank: Any) -> list[np.ndarray]:
        kh, kw, cin, f = kernel.shape
        a, b = truncated_svd(self.matrix(kernel), rank)
        vertical = a.reshape(kh, cin, rank)[:, None, :, :]
        horizontal = b.reshape(rank, kw, f).transpose(1, 0, 2)[None, :, :, :]
        return [vertical, horizontal]

    def compose(self, factors: Sequence[np.ndarray]) -> np.ndarray:
        a, b = factors
        return np.einsum("hcr,wrf->hwcf", a[:, 0], b[0])


class Tucker2(ConvDecomposition):
    """``1 x 1`` conv to ``rank_in``, a ``kh x kw`` core to ``rank_out``, ``1 x 1`` to ``filters``.

    Tucker-2 over the two channel modes (Kim et al., ICLR 2016), computed by
    :func:`tucker2`. ``rank`` is an int (both modes) or ``(rank_in,
    rank_out)``; it is not an SVD of one matrix, so the global budget
    allocation does not apply. Its :meth:`matrix` is the channel view, which
    has the kernel's norm (for relative errors).
    """

    name = "tucker2"
    svd_based = False

    def normalize_rank(self, rank: Any) -> int | tuple[int, int]:
        if isinstance(rank, (list, tuple)):
            if len(rank) != 2:
                raise ValueError(f"rank must be an int or (rank_in, rank_out), got {rank!r}")
            return (check_rank_arg(rank[0]), check_rank_arg(rank[1]))
        return check_rank_arg(rank)

    @staticmethod
    def _pair(rank: Any) -> tuple[int, int]:
        return (int(rank), int(rank)) if isinstance(rank, (int, np.integer)) else tuple(rank)

    def matrix(self, kernel: np.ndarray) -> np.ndarray:
        return ChannelSVD().matrix(kernel)

    def check_rank(self, rank: Any, kernel_shape: Sequence[int]) -> None:
        _, _, cin, filters = kernel_shape
        for argument, r, limit in zip(("rank_in", "rank_out"), self._pair(rank), (cin, filters)):
            if r > limit:
                raise ValueError(
                    f"Tucker-2 {argument}={r} must be <= {limit} (the channels of that mode)"
                )

    def stages(self, kernel_shape, rank, strides=(1, 1), dilation=(1, 1)) -> list[Stage]:
        kh, kw, cin, f = kernel_shape
        r_in, r_out = self._pair(rank)
        return [
            Stage("kernel_a", (1, 1, cin, r_in)),
            Stage("kernel_core", (kh, kw, r_in, r_out), tuple(strides), tuple(dilation)),
            Stage("kernel_b", (1, 1, r_out, f)),
        ]

    def factors(self, kernel: np.ndarray, rank: Any) -> list[np.ndarray]:
        u_in, core, u_out = tucker2(kernel, *self._pair(rank))
        return [u_in[None, None], core, u_out.T[None, None]]

    def compose(self, factors: Sequence[np.ndarray]) -> np.ndarray:
        u_in, core, u_out = factors
        return np.einsum("cr,hwrs,sf->hwcf", u_in[0, 0], core, u_out[0, 0])

    def choose_rank(
        self, kernel: np.ndarray, rank: int | None, energy: float | None
    ) -> tuple[int, int]:
        """A fixed rank clipped to each mode's channels, or per-mode energy ranks."""
        w = np.asarray(kernel, dtype=np.float64)
        if energy is None:
            return min(rank, w.shape[2]), min(rank, w.shape[3])
        modes = []
        for axis in (2, 3):
            unfolded = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
            modes.append(energy_rank(np.linalg.svd(unfolded, compute_uv=False), energy))
        return modes[0], modes[1]


class CP(ConvDecomposition):
    """``1 x 1`` to ``rank``, depthwise ``kh x 1``, depthwise ``1 x kw``, ``1 x 1`` to ``filters``.

    Lebedev et al. (ICLR 2015): the rank-``R`` CP decomposition of the 4-way
    kernel, computed by CP-ALS (:func:`tfcompress.lowrank.cp.cp_als`)::

        K[h, w, s, t] ~= sum_r Kx[h, r] Ky[w, r] Ks[s, r] Kt[t, r]

    is a chain of four convolutions of the input ``X`` (``*`` is a 1-D
    convolution along the named axis)::

        U[r] = sum_s Ks[s, r] X[s]            1 x 1, cin -> R
        V[r] = Kx[:, r] *_height U[r]         depthwise kh x 1 (height strides, dilation)
        W[r] = Ky[:, r] *_width V[r]          depthwise 1 x kw (width strides, dilation)
        Y[t] = sum_r Kt[t, r] W[r] + b[t]     1 x 1, R -> filters

    ``R * (cin + kh + kw + filters)`` weights. The CP weights ``lambda_r`` are
    split evenly, ``lambda_r^(1/4)`` into each factor.

    ``rank`` is an int, at most :func:`~tfcompress.lowrank.cp.cp_rank_bound`
    ``= kh*kw*cin*filters / max(kh, kw, cin, filters)``, the largest rank a
    kernel of that shape can have. CP is not an SVD of one matrix, so the
    global budget allocation does not apply; ``energy`` means the ALS fit
    ``1 - ||K - K_R||_F^2 / ||K||_F^2`` (for an SVD, exactly the kept fraction
    of ``sum s_k^2``), see :meth:`choose_rank`.

    Args:
        max_iter: Most ALS sweeps per decomposition.
        tol: ALS stops when the relative error changes by less than this.

    References:
        Lebedev, Ganin, Rakhuba, Oseledets and Lempitsky, "Speeding-up
        Convolutional Neural Networks Using Fine-tuned CP-Decomposition",
        ICLR 2015.
    """

    name = "cp"
    svd_based = False

    def __init__(self, max_iter: int = 300, tol: float = 1e-8) -> None:
        self.max_iter = int(max_iter)
        self.tol = float(tol)

    def __repr__(self) -> str:
        return f"CP(max_iter={self.max_iter}, tol={self.tol})"

    def matrix(self, kernel: np.ndarray) -> np.ndarray:
        return ChannelSVD().matrix(kernel)

    def check_rank(self, rank: Any, kernel_shape: Sequence[int]) -> None:
        limit = cp_rank_bound(kernel_shape)
        if rank > limit:
            kh, kw, cin, f = kernel_shape
            raise ValueError(
                f"CP rank={rank} must be <= kh*kw*cin*filters / max(kh, kw, cin, filters) = "
                f"{limit} for a ({kh}, {kw}, {cin}, {f}) kernel (the largest CP rank it can have)"
            )

    def stages(self, kernel_shape, rank, strides=(1, 1), dilation=(1, 1)) -> list[Stage]:
        kh, kw, cin, f = kernel_shape
        (sh, sw), (dh, dw) = strides, dilation
        return [
            Stage("kernel_a", (1, 1, cin, rank)),
            Stage("kernel_h", (kh, 1, rank, 1), (sh, 1), (dh, 1), depthwise=True),
            Stage("kernel_w", (1, kw, rank, 1), (1, sw), (1, dw), depthwise=True),
            Stage("kernel_b", (1, 1, rank, f)),
        ]

    def decompose(self, kernel: np.ndarray, rank: int):
        """The :class:`~tfcompress.lowrank.cp.CPResult` of a kernel (CP-ALS)."""
        return cp_als(kernel, rank, max_iter=self.max_iter, tol=self.tol)

    def factors(self, kernel: np.ndarray, rank: Any) -> list[np.ndarray]:
        result = self.decompose(kernel, rank)
        kx, ky, ks, kt = (f * result.weights**0.25 for f in result.factors)
        return [
            ks[None, None],
            kx[:, None, :, None],
            ky[None, :, :, None],
            kt.T[None, None],
        ]

    def compose(self, factors: Sequence[np.ndarray]) -> np.ndarray:
        ks, kx, ky, kt = factors
        return np.einsum("hr,wr,sr,rt->hwst", kx[:, 0, :, 0], ky[0, :, :, 0], ks[0, 0], kt[0, 0])

    def choose_rank(self, kernel: np.ndarray, rank: int | None, energy: float | None) -> int:
        """A fixed rank clipped to :func:`cp_rank_bound`, or the rank keeping ``energy``.

        With ``energy``, the rank is found by bisection over ``1 ..
        cp_max_useful_rank`` (the ranks with fewer weights than the kernel),
        running CP-ALS at each probe: the smallest probed rank whose fit
        ``1 - ||K - K_R||_F^2 / ||K||_F^2`` is at least ``energy`` (the ALS fit
        is not guaranteed monotone in the rank, so this is the bisection's
        answer, not an exhaustive search). If even the largest useful rank
        misses it, that rank plus one is returned: it has no fewer weights than
        the kernel, so :func:`~tfcompress.lowrank.factorize.factorize_model`
        keeps the layer and reports why.
        """
        w = np.asarray(kernel, dtype=np.float64)
        if energy is None:
            return min(int(rank), cp_rank_bound(w.shape))
        check_energy(energy)
        top = cp_max_useful_rank(w.shape)
        if top < 1:
            return 1

        def reaches(r: int) -> bool:  # the same slack as energy_rank's
            return self.decompose(w, r).fit >= energy - 1e-12

        if not reaches(top):
            return top + 1
        low, high = 1, top  # reaches(high) holds
        while low < high:
            middle = (low + high) // 2
            if reaches(middle):
                high = middle
            else:
                low = middle + 1
        return high


_CONV_DECOMPOSITIONS = {cls.name: cls() for cls in (ChannelSVD, SpatialSVD, Tucker2, CP)}
CONV_DECOMPOSITIONS = tuple(_CONV_DECOMPOSITIONS)


def conv_decomposition(
    decomposition: str | ConvDecomposition, argument: str = "decomposition"
) -> ConvDecomposition:
    """The :class:`ConvDecomposition` for a name (an object is returned as it is).

    Raises:
        ValueError: For an unknown name, listing the known ones.
    """
    if isinstance(decomposition, ConvDecomposition):
        return decomposition
    if decomposition not in _CONV_DECOMPOSITIONS:
        raise ValueError(f"{argument} must be one of {CONV_DECOMPOSITIONS}, got {decomposition!r}")
    return _CONV_DECOMPOSITIONS[decomposition]
