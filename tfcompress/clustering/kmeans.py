"""1-D k-means for weight sharing, exact on all the weights and fast.

General k-means on a 4096x4096 layer into 256 clusters takes minutes, which
is why Deep Compression users fit on a 1% sample. In one dimension the
clusters of any Lloyd step are contiguous intervals of the *sorted* values,
bounded by the midpoints between neighbouring centroids. So after one sort
and one prefix sum (O(n log n), ~0.3 s for 16.7M float32 here), each Lloyd
iteration is a binary search of the k-1 midpoints plus k differences of
prefix sums: O(k log n), microseconds, on *every* weight, no sampling.

Final labels are found with a uniform-grid lookup table (O(n), no per-element
binary search), falling back to an exact binary search only for the few values
that share a grid cell with a decision boundary.

Initialisations (all deterministic given ``seed``), each followed by Lloyd
iterations on all values (which never increase the error):

* ``"auto"`` (default): ``"optimal"`` up to 64 clusters, else ``"cuberoot"``;
* ``"optimal"``: the exact optimum among partitions whose boundaries fall
  between <= 1024 equal-count runs of the sorted values (dynamic programming,
  O(k * 1024^2)); the global optimum when n <= 1024. Lloyd alone can stall at
  1.6x the optimum on multi-modal data with few clusters;
* ``"cuberoot"``: centroid density proportional to p(x)^(1/3),
  read off a 16k-bin histogram; the asymptotically optimal quantizer density,
  so Lloyd has little left to do;
* ``"linear"``: evenly spaced between the minimum and the maximum;
* ``"density"``: equal-mass quantiles of the values (TFMOT's density-based);
* ``"kmeans++"``: D^2 sampling (Arthur & Vassilvitskii, 2007), exact on all
  values: the D^2 mass of every interval between chosen centres comes from
  prefix sums of x and x^2, so each draw costs O(k + log n).

References:
    Han, Mao, Dally. Deep Compression: Compressing Deep Neural Networks with
    Pruning, Trained Quantization and Huffman Coding. ICLR 2016.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["INITS", "KMeansResult", "assign_clusters", "kmeans_1d"]

INITS = ("auto", "optimal", "cuberoot", "density", "linear", "kmeans++")
DP_BINS = 1024
AUTO_DP_MAX_CLUSTERS = 64
MAX_CLUSTERS = 65536


@dataclasses.dataclass
class KMeansResult:
    """What :func:`kmeans_1d` returns.

    Attributes:
        centroids: ``(k,)`` float32, sorted ascending.
        labels: int32 array of the input's shape, each in ``[0, k)``.
        inertia: Within-cluster sum of squared errors with these labels.
        iterations: Lloyd iterations run.
        converged: Whether the partition stopped changing.
    """

    centroids: np.ndarray
    labels: np.ndarray
    inertia: float
    iterations: int
    converged: bool


def check_clusters(clusters: int) -> int:
    """Checks a cluster count: an int in ``[2, MAX_CLUSTERS]``; returns it as an int."""
    if isinstance(clusters, bool) or not isinstance(clusters, (int, np.integer)):
        raise TypeError(f"clusters must be an int, got {type(clusters).__name__} {clusters!r}")
    if not 2 <= clusters <= MAX_CLUSTERS:
        raise ValueError(f"clusters must be in [2, {MAX_CLUSTERS}], got {clusters}")
    return int(clusters)


def _range_sse(p1, p2, lo, hi, c):
    """Sum over sorted[lo:hi] of (x - c)^2, from prefix sums (vectorised)."""
    count = hi - lo
    s1 = p1[hi] - p1[lo]
    s2 = p2[hi] - p2[lo]
    return np.maximum(s2 - 2.0 * c * s1 + c * c * count, 0.0)


def _kmeanspp(s: np.ndarray, p1: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    n = s.size
    p2 = np.concatenate([[0.0], np.cumsum(np.square(s, dtype=np.float64))])
    centres = [float(s[rng.integers(n)])]
    for _ in range(k - 1):
        c = np.array(sorted(centres))
        mids = ((c[:-1] + c[1:]) / 2).astype(s.dtype)
        cut = np.concatenate([[0], np.searchsorted(s, mids), [n]])
        # Points in [cut[i], cut[i+1]) are nearest to c[i].
        masses = _range_sse(p1, p2, cut[:-1], cut[1:], c)
        total = masses.sum()
        if not total > 0:
            break  # every value already coincides with a centre
        target = rng.random() * total
        seg = min(int(np.searchsorted(np.cumsum(masses), target, side="right")), len(c) - 1)
        target -= masses[:seg].sum()
        lo, hi, centre = int(cut[seg]), int(cut[seg + 1]), c[seg]
        # Smallest t in (lo, hi] with D^2 mass of s[lo:t] >= target.
        a, b = lo + 1, hi
        while a < b:
            mid = (a + b) // 2
            if _range_sse(p1, p2, lo, mid, centre) >= target:
                b = mid
            else:
                a = mid + 1
        centres.append(float(s[min(a, hi) - 1]))
    out = np.array(sorted(centres))
    if out.size < k:  # fewer distinct values than clusters: pad with duplicates
        out = np.concatenate([out, np.full(k - out.size, out[-1])])
    return out


def _optimal_on_bins(s: np.ndarray, p1: np.ndarray, k: int) -> np.ndarray:
    """Exact k-means over runs of consecutive sorted values (dynamic programming).

    The values are grouped into at most ``DP_BINS`` equal-count runs; the DP
    finds the optimal partition whose boundaries fall between runs (exactly the
    optimum when n <= DP_BINS). O(k B^2) vectorised.
    """
    n = s.size
    edges = np.unique(np.linspace(0, n, min(n, DP_BINS) + 1).astype(np.int64))
    p2 = np.concatenate([[0.0], np.cumsum(np.square(s, dtype=np.float64))])
    c1, c2, cn = p1[edges], p2[edges], edges.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = (c2[None, :] - c2[:, None]) - (c1[None, :] - c1[:, None]) ** 2 / (
            cn[None, :] - cn[:, None]
        )
    b = edges.size
    upper = np.triu(np.ones((b, b), dtype=bool), 1)
    cost = np.where(upper, np.maximum(cost, 0.0), np.inf)  # cost[i, j]: runs i..j-1
    best = cost[0].copy()
    choices = []
    for _ in range(1, min(k, b - 1)):
        total = best[:, None] + cost
        arg = np.argmin(total, axis=0)
        choices.append(arg)
        best = total[arg, np.arange(b)]
    # Backtrack from the last edge.
    cuts = [b - 1]
    for arg in reversed(choices):
        cuts.append(int(arg[cuts[-1]]))
    cuts.append(0)
    bounds = edges[np.array(cuts[::-1])]
    lo, hi = bounds[:-1], bounds[1:]
    keep = hi > lo
    centroids = (p1[hi[keep]] - p1[lo[keep]]) / (hi[keep] - lo[keep])
    if centroids.size < k:
        centroids = np.concatenate([centroids, np.full(k - centroids.size, centroids[-1])])
    return np.sort(centroids)


def _initial_centroids(s: np.ndarray, p1: np.ndarray, k: int, init: str, seed: int) -> np.ndarray:
    n = s.size
    if init == "auto":
        init = "optimal" if k <= AUTO_DP_MAX_CLUSTERS else "cuberoot"
    if init == "optimal":
        return _optimal_on_bins(s, p1, k)
    if init == "linear":
        return np.linspace(float(s[0]), float(s[-1]), k)
    if init == "cuberoot":
        # High-resolution quantization theory: the optimal centroid density is
        # proportional to p(x)^(1/3) (Panter & Dite, 1951).
        bins = int(min(n, 16384))
        edges = np.linspace(float(s[0]), float(s[-1]), bins + 1)
        counts = np.diff(np.searchsorted(s, edges[1:-1].astype(s.dtype)), prepend=0, append=n)
        cdf = np.concatenate([[0.0], np.cumsum(np.cbrt(counts.astype(np.float64)))])
        return np.interp((np.arange(k) + 0.5) / k * cdf[-1], cdf, edges)
    if init == "density":
        positions = ((np.arange(k) + 0.5) * n / k).astype(np.int64)
        return s[np.minimum(positions, n - 1)].astype(np.float64)
    return _kmeanspp(s, p1, k, np.random.default_rng(seed))


def _boundaries(centroids: np.ndarray) -> np.ndarray:
    return (centroids[:-1] + centroids[1:]) / 2


def assign_clusters(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid for every value (ties go to the larger one).

    O(n) through a lookup table over a uniform grid of the value range: a value
    whose grid cell holds no decision boundary gets its label from the table;
    the few others get an exact binary search.

    Args:
        values: Any-shaped float array.
        centroids: ``(k,)`` sorted ascending.

    Returns:
        int32 labels of ``values``' shape.
    """
    x = np.asarray(values, dtype=np.float32)
    flat = x.reshape(-1)
    c = np.asarray(centroids, dtype=np.float64)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"centroids must be a non-empty 1-D array, got shape {c.shape}")
    if np.any(np.diff(c) < 0):
        raise ValueError("centroids must be sorted ascending")
    bounds = _boundaries(c).astype(np.float32)
    if flat.size < 4096 or c.size == 1:
        return np.searchsorted(bounds, flat, side="right").astype(np.int32).reshape(x.shape)
    lo, hi = float(flat.min()), float(flat.max())
    cells = 1 << 16
    scale = np.float32((cells - 1) / (hi - lo)) if hi > lo else np.float32(0)
    lo32 = np.float32(lo)

    def cell(v: np.ndarray) -> np.ndarray:
        # Monotone in v (each float op is), so v < b implies cell(v) <= cell(b).
        buf = np.subtract(v, lo32, dtype=np.float32)
        np.multiply(buf, scale, out=buf)
        np.clip(buf, 0, cells - 1, out=buf)
        return buf.astype(np.int32)

    bound_cells = cell(bounds)
    # A cell without a boundary: its label is the number of boundaries in lower
    # cells. A cell holding one is marked -1 and resolved by binary search.
    table = np.searchsorted(bound_cells, np.arange(cells), side="left").astype(np.int32)
    table[bound_cells] = -1
    labels = table[cell(flat)]
    fix = np.flatnonzero(labels < 0)
    if fix.size:
        labels[fix] = np.searchsorted(bounds, flat[fix], side="right")
    return labels.reshape(x.shape)


def kmeans_1d(
    values: np.ndarray,
    clusters: int,
    *,
    init: str = "auto",
    max_iter: int = 1000,
    tol: float = 1e-7,
    seed: int = 0,
) -> KMeansResult:
    """Clusters scalar values into ``clusters`` shared values (Lloyd on all values).

    Args:
        values: Any-shaped real array (flattened); NaN/inf are refused.
        clusters: Number of centroids, in [2, 65536].
        init: ``"auto"`` (``"optimal"`` for up to 64 clusters, else
            ``"cuberoot"``), ``"optimal"`` (exact DP over <= 1024 runs of the
            sorted values, exact when n <= 1024), ``"cuberoot"`` (centroid
            density ~ p(x)^(1/3), the high-rate optimum), ``"density"`` (equal-mass quantiles,
            TFMOT's choice), ``"linear"`` or ``"kmeans++"``.
        max_iter: Upper bound on Lloyd iterations (each is O(k log n)).
        tol: Stop when no centroid moves more than ``tol`` times the value
            range (or when the partition stops changing).
        seed: Seed of the k-means++ draws (the result is deterministic).

    Returns:
        A :class:`KMeansResult`; ``labels`` has ``values``' shape.

    Raises:
        TypeError: If ``clusters`` is not an int.
        ValueError: For ``clusters`` outside [2, 65536], an unknown ``init``,
            empty or non-finite ``values``.

    Example:
        >>> w = np.random.default_rng(0).standard_normal((4096, 4096), "float32")
        >>> result = kmeans_1d(w, 256)
        >>> kernel = result.centroids[result.labels]
    """
    k = check_clusters(clusters)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if max_iter < 0:
        raise ValueError(f"max_iter must be >= 0, got {max_iter}")
    x = np.asarray(values)
    if x.size == 0:
        raise ValueError("values is empty; k-means needs at least one value")
    flat = x.reshape(-1).astype(np.float32, copy=False)
    if not np.isfinite(flat).all():
        raise ValueError("values contains NaN or infinity")
    s = np.sort(flat)
    n = s.size
    p1 = np.concatenate([[0.0], np.cumsum(s, dtype=np.float64)])
    c = _initial_centroids(s, p1, k, init, seed)
    span = float(s[-1]) - float(s[0])

    previous = None
    converged = False
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007
        # Boundaries in s's dtype: a float64 needle would convert all of s.
        bounds = _boundaries(c).astype(s.dtype)
        cut = np.concatenate([[0], np.searchsorted(s, bounds, side="left"), [n]])
        if previous is not None and np.array_equal(cut, previous):
            converged = True
            break
        previous = cut
        counts = np.diff(cut)
        sums = p1[cut[1:]] - p1[cut[:-1]]
        new = np.where(counts > 0, sums / np.maximum(counts, 1), c)
        new.sort()  # an empty cluster keeps its centroid; keep the order valid
        shift = float(np.max(np.abs(new - c)))
        c = new
        if shift <= tol * span:
            converged = True
            break
    centroids = c.astype(np.float32)
    labels = assign_clusters(x, centroids)
    # Same float32 boundaries as assign_clusters, so the sorted runs match the labels.
    bounds = _boundaries(centroids.astype(np.float64)).astype(np.float32)
    cut = np.concatenate([[0], np.searchsorted(s, bounds, side="left"), [n]])
    c64 = centroids.astype(np.float64)
    sums = p1[cut[1:]] - p1[cut[:-1]]
    # sum (x - c)^2 = sum x^2 - sum_c (2 c S_c - c^2 n_c); sum x^2 in float64 chunks.
    sum_sq = sum(
        float(np.dot(chunk, chunk))
        for chunk in (s[i : i + (1 << 20)].astype(np.float64) for i in range(0, n, 1 << 20))
    )
    inertia = max(sum_sq - float(np.sum(2 * c64 * sums - c64 * c64 * np.diff(cut))), 0.0)
    return KMeansResult(centroids, labels, inertia, iterations, converged)
