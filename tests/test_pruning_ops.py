"""Mask math and schedules, checked against counts computed by hand."""

import keras
import numpy as np
import pytest

from tfcompress.pruning.masks import (
    TaylorCriterion,
    compute_masks,
    erk_sparsities,
    matrix_view,
    parse_granularity,
    rigl_update,
)
from tfcompress.schedules import ConstantSparsity, PolynomialSparsity

pytestmark = pytest.mark.jax  # backend-agnostic: also in the JAX subset


def _weight(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.8, 0.97])
def test_unstructured_prunes_exactly_the_smallest(sparsity):
    w = _weight((16, 8))
    (mask,) = compute_masks([w], sparsity)
    assert int((mask == 0).sum()) == round(sparsity * w.size)
    if sparsity > 0:
        assert np.abs(w[mask == 0]).max() <= np.abs(w[mask == 1]).min()


def test_block_prunes_whole_tiles_by_l1():
    w = np.ones((4, 8), np.float32)
    w[:2, :4] = 0.1  # the weakest 2x4 tile
    (mask,) = compute_masks([w], 0.25, "block", block_shape=(2, 4))
    expected = np.ones_like(w)
    expected[:2, :4] = 0
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.75])
def test_channel_prunes_whole_output_channels(sparsity):
    w = _weight((3, 3, 4, 8))
    (mask,) = compute_masks([w], sparsity, "channel")
    per_channel = mask.reshape(-1, 8)
    assert set(np.unique(per_channel.sum(0))) <= {0.0, 36.0}
    assert int((per_channel.sum(0) == 0).sum()) == round(sparsity * 8)
    l1 = np.abs(w).reshape(-1, 8).sum(0)
    assert l1[per_channel.sum(0) == 0].max() <= l1[per_channel.sum(0) > 0].min()


def test_depthwise_channels_span_input_and_multiplier_axes():
    w = _weight((3, 3, 4, 2))
    (mask,) = compute_masks([w], 0.5, "channel", channel_axes=[(-2, -1)])
    per_channel = matrix_view(mask, (-2, -1)).sum(0)
    assert sorted(per_channel) == [0.0] * 4 + [9.0] * 4


def test_n_m_keeps_exactly_n_in_every_group_along_the_input_axis():
    w = _weight((3, 3, 8, 16))  # K = 72 = 18 groups of 4
    (mask,) = compute_masks([w], 0.5, "2:4")
    groups = matrix_view(mask, None).reshape(-1, 4, 16)
    assert np.all(groups.sum(axis=1) == 2)
    magnitude = np.abs(matrix_view(w, None)).reshape(-1, 4, 16)
    kept = np.where(groups > 0, magnitude, np.inf).min(axis=1)
    dropped = np.where(groups == 0, magnitude, -np.inf).max(axis=1)
    assert np.all(kept >= dropped)


def test_n_m_gradual_reaches_intermediate_targets_inside_the_pattern():
    w = _weight((16, 4))
    for sparsity in (0.125, 0.25, 0.375):
        (mask,) = compute_masks([w], sparsity, "2:4")
        assert int((mask == 0).sum()) == round(sparsity * w.size)
        assert np.all(mask.reshape(4, 4, 4).sum(axis=1) >= 2)


def test_global_scope_uses_one_threshold():
    small, large = _weight((8, 8), 1) * 0.01, _weight((8, 8), 2)
    masks = compute_masks([small, large], 0.5, scope="global")
    assert sum(int((m == 0).sum()) for m in masks) == 64
    assert (masks[0] == 0).mean() > 0.9  # the small-magnitude layer goes first


def test_global_channel_keeps_a_channel_per_layer():
    a, b = _weight((4, 4), 1) * 1e-3, _weight((4, 4), 2)
    masks = compute_masks([a, b], 0.5, "channel", scope="global")
    assert masks[0].reshape(4, 4).sum(0).max() > 0


def test_taylor_channel_score_is_square_of_summed_first_order_terms():
    w = np.array([[1.0, 1.0, 1.0], [1.0, -1.0, 1.0]], np.float32)
    g = np.array([[0.5, 3.0, 0.1], [0.5, 3.0, 0.1]], np.float32)
    # channel scores: (0.5+0.5)^2 = 1, (3-3)^2 = 0, (0.1+0.1)^2 = 0.04
    (mask,) = compute_masks([w], 1 / 3, "channel", criterion="taylor", gradients=[g])
    np.testing.assert_array_equal(mask[0], [1, 0, 1])
    (mask,) = compute_masks([w], 2 / 3, "channel", criterion=TaylorCriterion(), gradients=[g])
    np.testing.assert_array_equal(mask[0], [1, 0, 0])


@pytest.mark.parametrize("granularity", ["2:2", "0:4", "5:4", "2-4", "a:b", "2:4:8", "", "rows"])
def test_bad_granularity_strings_are_refused(granularity):
    with pytest.raises(ValueError, match="granularity"):
        parse_granularity(granularity)


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, float("nan"), "half"])
def test_sparsity_outside_unit_interval_is_refused(sparsity):
    with pytest.raises(ValueError, match=r"sparsity must be"):
        compute_masks([_weight((4, 4))], sparsity)


def test_n_m_above_its_limit_and_global_n_m_are_refused():
    with pytest.raises(ValueError, match="1 - N/M"):
        compute_masks([_weight((8, 4))], 0.8, "2:4")
    with pytest.raises(ValueError, match="global"):
        compute_masks([_weight((8, 4))], 0.5, "2:4", scope="global")


def test_erk_matches_overall_sparsity_and_favours_small_layers():
    shapes = [(3, 3, 1, 32), (3, 3, 32, 64), (2048, 128), (128, 10)]
    sparsities = erk_sparsities(shapes, 0.9)
    sizes = np.array([np.prod(s) for s in shapes])
    assert np.dot(sparsities, sizes) / sizes.sum() == pytest.approx(0.9, abs=1e-9)
    assert sparsities[0] < sparsities[2]
    assert all(0 <= s < 1 for s in sparsities)


def test_rigl_update_moves_connections_and_keeps_the_count():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((10, 10))
    mask = (rng.random((10, 10)) < 0.3).astype(np.float32)
    g = rng.standard_normal((10, 10))
    new = rigl_update(mask, w * mask, g, 0.5)
    assert new.sum() == mask.sum()
    dropped = (mask == 1) & (new == 0)
    grown = (mask == 0) & (new == 1)
    assert dropped.sum() == grown.sum() == round(0.5 * mask.sum())
    still = (mask == 1) & (new == 1)
    assert np.abs(w[dropped]).max() <= np.abs(w[still]).min()
    assert np.abs(g[grown]).min() >= np.abs(g[(mask == 0) & (new == 0)]).max()


def test_polynomial_schedule_matches_zhu_gupta():
    schedule = PolynomialSparsity(0.8, begin_step=10, end_step=110, initial_sparsity=0.1)
    for step in (0, 10, 35, 60, 110, 500):
        progress = min(max((step - 10) / 100, 0), 1)
        assert schedule(step) == pytest.approx(0.8 + (0.1 - 0.8) * (1 - progress) ** 3)
    assert ConstantSparsity(0.5, 3)(2) == 0.0 and ConstantSparsity(0.5, 3)(3) == 0.5


@pytest.mark.parametrize(
    "schedule", [PolynomialSparsity(0.7, 5, 50, power=2.0), ConstantSparsity(0.4, 7)]
)
def test_schedules_round_trip_through_keras_serialization(schedule):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    assert [restored(s) for s in range(0, 60, 5)] == [schedule(s) for s in range(0, 60, 5)]


def test_schedule_errors_name_the_argument():
    with pytest.raises(ValueError, match="end_step"):
        PolynomialSparsity(0.5, begin_step=10, end_step=10)
    with pytest.raises(ValueError, match="final_sparsity"):
        PolynomialSparsity(1.0, end_step=10)
    with pytest.raises(ValueError, match="begin_step"):
        ConstantSparsity(0.5, begin_step=-1)
