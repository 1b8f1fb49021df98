"""1-D k-means: optimality against an exact DP, inits, determinism, errors."""

import numpy as np
import pytest

from tfcompress.clustering.kmeans import INITS, assign_clusters, kmeans_1d


def _optimal_sse(values: np.ndarray, k: int) -> float:
    """Exact k-means optimum in 1-D by dynamic programming over sorted values (O(k n^2))."""
    s = np.sort(values.astype(np.float64))
    n = s.size
    p1 = np.concatenate([[0.0], np.cumsum(s)])
    p2 = np.concatenate([[0.0], np.cumsum(s * s)])

    def cost(i, j):  # s[i:j]
        m = j - i
        return p2[j] - p2[i] - (p1[j] - p1[i]) ** 2 / m

    best = np.array([cost(0, j) if j else 0.0 for j in range(n + 1)])
    for _ in range(1, k):
        new = best.copy()
        for j in range(1, n + 1):
            new[j] = min(best[i] + cost(i, j) for i in range(1, j)) if j > 1 else 0.0
        best = new
    return float(best[n])


@pytest.mark.parametrize("init", INITS)
def test_against_exact_optimum(init):
    rng = np.random.default_rng(3)
    values = np.concatenate(
        [rng.normal(-1, 0.3, 60), rng.normal(2, 0.5, 60), rng.laplace(0, 1, 40)]
    )
    for k in (2, 4, 8, 16):
        result = kmeans_1d(values, k, init=init)
        optimum = _optimal_sse(values, k)
        assert result.inertia >= optimum * (1 - 1e-6)  # values are clustered as float32
        if init in ("auto", "optimal"):  # n <= 1024: the DP is the global optimum
            assert result.inertia == pytest.approx(optimum, rel=1e-5)
        else:  # a Lloyd fixed point: each centroid is the mean of its members
            c, labels = result.centroids, result.labels
            for j in np.unique(labels):
                assert c[j] == pytest.approx(values[labels == j].mean(), rel=1e-4, abs=1e-5)


def test_binned_optimum_on_large_input_beats_lloyd_from_quantiles():
    rng = np.random.default_rng(4)
    values = np.concatenate([rng.normal(-1, 0.2, 30_000), rng.normal(1.5, 0.4, 30_000)])
    auto = kmeans_1d(values, 8)
    for init in ("density", "linear", "cuberoot"):
        assert auto.inertia <= kmeans_1d(values, 8, init=init).inertia * (1 + 1e-5)


def test_labels_are_nearest_centroid_and_inertia_matches():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((300, 200)).astype("float32")
    result = kmeans_1d(values, 32)
    assert result.labels.shape == values.shape and result.labels.dtype == np.int32
    c = result.centroids
    assert np.all(np.diff(c) >= 0)
    brute = np.argmin(np.abs(values[..., None] - c.astype(np.float64)), axis=-1)
    # Equal distances may break either way; the chosen centroid must be as near.
    d_chosen = np.abs(values - c[result.labels])
    d_best = np.abs(values - c[brute])
    np.testing.assert_allclose(d_chosen, d_best, atol=1e-6)
    sse = float(np.sum((values.astype(np.float64) - c[result.labels]) ** 2))
    assert result.inertia == pytest.approx(sse, rel=1e-6)
    # Each centroid is the mean of its members (a Lloyd fixed point).
    for j in np.unique(result.labels)[:5]:
        assert c[j] == pytest.approx(values[result.labels == j].mean(), rel=1e-4, abs=1e-6)


def test_assign_clusters_lookup_table_matches_binary_search():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.standard_normal(100_000), [0.0, 1e-9, -1e-9]]).astype("float32")
    centroids = np.sort(rng.standard_normal(256)).astype("float32")
    centroids[10:13] = centroids[10]  # duplicates and close boundaries
    bounds = ((centroids[:-1].astype(np.float64) + centroids[1:]) / 2).astype("float32")
    expected = np.searchsorted(bounds, values, side="right")
    np.testing.assert_array_equal(assign_clusters(values, centroids), expected)


def test_deterministic_and_beats_sampled_sklearn():
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(2)
    values = (rng.standard_normal(200_000) * 0.05).astype("float32")
    a = kmeans_1d(values, 64, init="kmeans++", seed=5)
    b = kmeans_1d(values, 64, init="kmeans++", seed=5)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    ours = kmeans_1d(values, 64)
    sample = values[rng.choice(values.size, values.size // 100, replace=False)]
    km = KMeans(64, n_init=1, random_state=0).fit(sample[:, None])
    c = np.sort(km.cluster_centers_.ravel()).astype("float32")
    theirs = float(np.sum((values - c[assign_clusters(values, c)]).astype(np.float64) ** 2))
    assert ours.inertia <= theirs


def test_fewer_distinct_values_than_clusters():
    values = np.array([1.0, 1.0, 2.0, 2.0, 2.0], "float32")
    for init in INITS:
        result = kmeans_1d(values, 4, init=init)
        assert result.inertia == pytest.approx(0.0, abs=1e-12)
        np.testing.assert_array_equal(result.centroids[result.labels], values)


@pytest.mark.parametrize("clusters", [1, 0, -3, 65537])
def test_bad_cluster_counts(clusters):
    with pytest.raises(ValueError, match="clusters must be in"):
        kmeans_1d(np.arange(10.0), clusters)


def test_bad_inputs():
    with pytest.raises(TypeError, match="clusters"):
        kmeans_1d(np.arange(10.0), 2.5)
    with pytest.raises(ValueError, match="init"):
        kmeans_1d(np.arange(10.0), 2, init="random")
    with pytest.raises(ValueError, match="empty"):
        kmeans_1d(np.zeros(0), 2)
    with pytest.raises(ValueError, match="NaN"):
        kmeans_1d(np.array([1.0, np.nan]), 2)
