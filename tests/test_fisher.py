"""InverseFisher (M-FAC) against the explicit inverse of the damped empirical Fisher."""

import numpy as np
import pytest

from tfcompress.core.fisher import InverseFisher, relative_damping


def _explicit(grads, damping, block_size=None):
    """The block-diagonal ``damping * I + G_b^T G_b / m``, formed and inverted in NumPy."""
    m, d = grads.shape
    size = d if block_size is None else block_size
    fisher = np.zeros((d, d))
    for start in range(0, d, size):
        part = grads[:, start : start + size]
        fisher[start : start + size, start : start + size] = (
            damping * np.eye(part.shape[1]) + part.T @ part / m
        )
    return fisher, np.linalg.inv(fisher)


@pytest.mark.parametrize(
    "m, d, block_size",
    [(12, 50, None), (1, 30, None), (60, 20, None), (12, 50, 7), (12, 50, 16), (5, 50, 50)],
)
def test_ihvp_and_diagonal_equal_the_explicit_inverse(m, d, block_size):
    rng = np.random.default_rng(m * 100 + d)
    grads = rng.standard_normal((m, d)) * rng.uniform(0.1, 3.0, d)  # unequal scales
    damping = 0.05
    _, inverse = _explicit(grads, damping, block_size)
    fisher = InverseFisher(grads, damping, block_size=block_size)
    vector = rng.standard_normal(d)
    np.testing.assert_allclose(fisher.ihvp(vector), inverse @ vector, rtol=1e-9, atol=1e-9)
    vectors = rng.standard_normal((3, d))
    np.testing.assert_allclose(fisher.ihvp(vectors), vectors @ inverse, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(fisher.diagonal(), np.diag(inverse), rtol=1e-9, atol=1e-12)
    assert np.all(fisher.diagonal() > 0) and np.all(fisher.diagonal() <= 1 / damping)


def test_float32_gradients_at_small_damping_stay_accurate():
    # x / lambda and the correction cancel in the gradients' span: the float64
    # arithmetic keeps the answer to ~1e-7 even with float32 gradients.
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((16, 40)).astype(np.float32)
    damping = 1e-5
    _, inverse = _explicit(grads.astype(np.float64), damping)
    fisher = InverseFisher(grads, damping)
    vector = rng.standard_normal(40)
    expected = inverse @ vector
    assert np.max(np.abs(fisher.ihvp(vector) - expected)) < 1e-6 * np.max(np.abs(expected))
    np.testing.assert_allclose(fisher.diagonal(), np.diag(inverse), rtol=1e-6)


def test_single_weight_removal_is_the_obs_closed_form():
    rng = np.random.default_rng(1)
    grads = rng.standard_normal((8, 20))
    weights = rng.standard_normal(20)
    damping = 0.1
    fisher_matrix, inverse = _explicit(grads, damping)
    fisher = InverseFisher(grads, damping)
    q = 7
    update = fisher.removal_update(weights, [q])
    expected = -weights[q] * inverse[:, q] / inverse[q, q]
    np.testing.assert_allclose(update, expected, rtol=1e-9, atol=1e-12)
    assert abs(weights[q] + update[q]) < 1e-12  # the weight is removed exactly
    # The quadratic model's loss increase of that update is the saliency.
    increase = 0.5 * update @ fisher_matrix @ update
    score = fisher.scores(weights)[q]
    np.testing.assert_allclose(increase, score, rtol=1e-9)
    np.testing.assert_allclose(score, weights[q] ** 2 / (2 * inverse[q, q]), rtol=1e-9)
    # ...and no other single-coordinate change that zeroes w_q costs less.
    moved = weights.copy()
    moved[q] = 0.0
    assert 0.5 * (moved - weights) @ fisher_matrix @ (moved - weights) >= increase


def test_several_removals_sum_the_single_updates_blockwise():
    rng = np.random.default_rng(2)
    grads = rng.standard_normal((6, 30))
    weights = rng.standard_normal(30)
    fisher = InverseFisher(grads, 0.2, block_size=10)
    _, inverse = _explicit(grads, 0.2, block_size=10)
    pruned = [1, 12, 13, 29]
    expected = sum(-weights[q] * inverse[:, q] / inverse[q, q] for q in pruned)
    np.testing.assert_allclose(fisher.removal_update(weights, pruned), expected, atol=1e-12)
    mask = np.zeros(30, bool)
    mask[pruned] = True
    np.testing.assert_allclose(fisher.removal_update(weights, mask), expected, atol=1e-12)
    # Blocks are independent: a weight pruned in block 0 moves nothing in blocks 1 and 2.
    only_first = fisher.removal_update(weights, [1])
    assert np.all(only_first[10:] == 0) and np.any(only_first[:10] != 0)


def test_relative_damping_is_the_mean_fisher_diagonal():
    rng = np.random.default_rng(3)
    grads = rng.standard_normal((5, 12))
    mean_diagonal = np.mean(np.diag(grads.T @ grads / 5))
    assert relative_damping(grads, 0.01) == pytest.approx(0.01 * mean_diagonal)
    parts = [grads[:, :4], grads[:, 4:]]
    assert relative_damping(parts, 0.01) == pytest.approx(0.01 * mean_diagonal)
    assert relative_damping(np.zeros((3, 4)), 0.5) == 0.5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(gradients=np.ones((2, 3, 4)), damping=0.1), "shape"),
        (dict(gradients=np.ones((0, 3)), damping=0.1), "m >= 1"),
        (dict(gradients=np.array([[1.0, np.nan]]), damping=0.1), "NaN"),
        (dict(gradients=np.array([["a"]]), damping=0.1), "numeric"),
        (dict(gradients=np.ones((2, 3)), damping=0.0), "damping"),
        (dict(gradients=np.ones((2, 3)), damping=float("inf")), "damping"),
        (dict(gradients=np.ones((2, 3)), damping="0.1"), "damping"),
        (dict(gradients=np.ones((2, 3)), damping=0.1, block_size=0), "block_size"),
        (dict(gradients=np.ones((2, 3)), damping=0.1, block_size=2.5), "block_size"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InverseFisher(**kwargs)


def test_bad_vectors_and_weights_are_refused():
    fisher = InverseFisher(np.ones((2, 3)), 0.1)
    with pytest.raises(ValueError, match=r"\(3,\)"):
        fisher.ihvp(np.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        fisher.ihvp(np.array([1.0, np.inf, 0.0]))
    with pytest.raises(ValueError, match="weights"):
        fisher.scores(np.ones(2))
    with pytest.raises(ValueError, match="boolean"):
        fisher.removal_update(np.ones(3), np.array([True, False]))
