"""Learning-rate schedules and the rewinding callback: values against NumPy references."""

import math

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.callbacks import LearningRateRewinding, mask_update_steps
from tfcompress.schedules import (
    OneCycle,
    Rewinding,
    WarmupCosine,
    one_cycle,
    rewound_step,
    warmup_cosine,
)

STEPS = np.arange(0, 130)


def values(schedule, steps=STEPS):
    return np.array([float(keras.ops.convert_to_numpy(schedule(int(s)))) for s in steps])


def np_warmup_cosine(s, peak, decay, warmup, init, end):
    if s < warmup:
        return init + (peak - init) * s / warmup
    frac = min(s - warmup, decay) / decay
    return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * frac))


def np_one_cycle(s, peak, total, pct, div, final_div):
    start, final, rise = peak / div, peak / div / final_div, pct * total

    def anneal(a, b, f):
        return b + (a - b) * 0.5 * (1 + math.cos(math.pi * f))

    if s <= rise:
        return anneal(start, peak, s / rise)
    return anneal(peak, final, min((s - rise) / (total - rise), 1.0))


def test_warmup_cosine_matches_numpy_and_keras_cosine_decay():
    sched = WarmupCosine(
        1e-2, decay_steps=90, warmup_steps=20, initial_learning_rate=1e-3, final_learning_rate=1e-4
    )
    expected = [np_warmup_cosine(s, 1e-2, 90, 20, 1e-3, 1e-4) for s in STEPS]
    np.testing.assert_allclose(values(sched), expected, rtol=1e-5, atol=1e-9)
    # Keras' CosineDecay with warm-up is the same curve (alpha = end / peak).
    keras_sched = keras.optimizers.schedules.CosineDecay(
        1e-3, decay_steps=90, alpha=1e-2, warmup_target=1e-2, warmup_steps=20
    )
    np.testing.assert_allclose(values(sched), values(keras_sched), rtol=1e-5, atol=1e-9)
    assert values(sched, [0])[0] == pytest.approx(1e-3)
    assert values(sched, [20])[0] == pytest.approx(1e-2)
    assert values(sched, [500])[0] == pytest.approx(1e-4)


def test_one_cycle_matches_numpy():
    sched = OneCycle(0.1, total_steps=100, pct_start=0.25, div_factor=10, final_div_factor=100)
    expected = [np_one_cycle(s, 0.1, 100, 0.25, 10, 100) for s in STEPS]
    np.testing.assert_allclose(values(sched), expected, rtol=1e-5, atol=1e-9)
    v = values(sched)
    assert v[0] == pytest.approx(0.01) and v[25] == pytest.approx(0.1)
    assert v[100] == pytest.approx(1e-4) and v.argmax() == 25


@pytest.mark.jax
def test_pure_functions_work_on_step_tensors():
    step = keras.ops.convert_to_tensor(37, "int64")
    assert float(warmup_cosine(step, 1.0, 50, 10)) == pytest.approx(
        np_warmup_cosine(37, 1.0, 50, 10, 0.0, 0.0), rel=1e-6
    )
    assert float(one_cycle(step, 1.0, 100)) == pytest.approx(
        np_one_cycle(37, 1.0, 100, 0.3, 25, 1e4), rel=1e-6
    )
    assert float(rewound_step(step, [10, 30], rewind_to=2)) == 9.0


@pytest.mark.parametrize(
    ("step", "restarts", "period", "rewind_to", "expected"),
    [
        (5, [10, 20], None, 0, 5),
        (10, [10, 20], None, 0, 0),
        (25, [10, 20], None, 0, 5),
        (25, [10, 20], None, 3, 8),
        (25, [], 7, 0, 4),
        (25, [23], 7, 0, 2),
        (6, [], 7, 4, 6),
    ],
)
def test_rewound_step(step, restarts, period, rewind_to, expected):
    assert float(rewound_step(step, restarts, period, rewind_to)) == expected


def test_rewinding_rises_after_each_restart():
    base = WarmupCosine(1.0, decay_steps=30, warmup_steps=5)
    sched = Rewinding(base, restart_steps=[40, 80], rewind_to=0)
    v = values(sched)
    np.testing.assert_allclose(v[:40], values(base, range(40)), rtol=1e-6)
    np.testing.assert_allclose(v[80:130], values(base, range(50)), rtol=1e-6, atol=1e-9)
    for r in (40, 80):
        assert v[r] < v[r - 1] or v[r - 1] == 0.0
        assert v[r + 5] == pytest.approx(1.0)  # back at the peak after re-warm-up
        assert v[r + 5] > v[r - 1]


def test_schedules_train_a_model_and_round_trip_in_keras_file(digits, tmp_path):
    sched = Rewinding(OneCycle(0.05, total_steps=20), restart_steps=[10])
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    model.compile(
        optimizer=keras.optimizers.SGD(sched),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = digits.x_train[:96].reshape(-1, 64), digits.y_train[:96]
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # 12 steps
    expected_lr = float(sched(12))
    assert float(model.optimizer.learning_rate) == pytest.approx(expected_lr)
    assert expected_lr == pytest.approx(np_one_cycle(2, 0.05, 20, 0.3, 25, 1e4), rel=1e-5)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.optimizer._learning_rate, Rewinding)
    assert loaded.optimizer._learning_rate.get_config() == sched.get_config()
    assert float(loaded.optimizer.learning_rate) == pytest.approx(expected_lr)


@pytest.mark.jax
@pytest.mark.parametrize(
    "schedule",
    [
        WarmupCosine(1e-3, 100, 10, 1e-5, 1e-6),
        OneCycle(0.1, 50, 0.4, 5.0, 20.0),
        Rewinding(WarmupCosine(1e-3, 10), restart_steps=[5, 3], period=7, rewind_to=1),
        Rewinding(0.01),
    ],
)
def test_schedule_config_round_trip(schedule):
    config = keras.optimizers.schedules.serialize(schedule)
    assert config["registered_name"].startswith("tfcompress>")
    clone = keras.optimizers.schedules.deserialize(config)
    assert type(clone) is type(schedule) and clone.get_config() == schedule.get_config()
    np.testing.assert_allclose(values(clone, range(40)), values(schedule, range(40)))


def test_schedule_errors_name_argument_and_value():
    with pytest.raises(ValueError, match=r"`peak_learning_rate` must be > 0, got 0"):
        WarmupCosine(0, 10)
    with pytest.raises(ValueError, match=r"`decay_steps` must be an integer > 0, got 0"):
        WarmupCosine(1.0, 0)
    with pytest.raises(ValueError, match=r"`warmup_steps` must be an integer >= 0, got -1"):
        WarmupCosine(1.0, 10, warmup_steps=-1)
    with pytest.raises(ValueError, match=r"`pct_start` must be in \(0, 1\), got 1.0"):
        OneCycle(1.0, 10, pct_start=1.0)
    with pytest.raises(ValueError, match=r"`div_factor` must be a number >= 1, got 0.5"):
        OneCycle(1.0, 10, div_factor=0.5)
    with pytest.raises(ValueError, match=r"`restart_steps` must hold integers > 0, got \[0\]"):
        Rewinding(0.1, restart_steps=[0])
    with pytest.raises(ValueError, match=r"`period` must be an integer > 0, got 2.5"):
        Rewinding(0.1, period=2.5)
    with pytest.raises(ValueError, match=r"`schedule` must be .* got 'cosine'"):
        Rewinding("cosine")


# ---------------------------------------------------------------- callback


class FakePruning:
    """Stands for GradualPruning: only the protocol the coupling reads (MaskUpdater)."""

    def mask_update_steps(self, total_steps):
        return tuple(range(0, min(9, total_steps) + 1, 3))


class LrRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_end(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def _fit_recording(callback, epochs, model=None, data=None):
    x, y = data
    if model is None:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
        model.compile(
            optimizer=keras.optimizers.SGD(1.0),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    recorder = LrRecorder()
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=[callback, recorder])
    return model, recorder.rates


@pytest.fixture(scope="module")
def small(digits):
    return digits.x_train[:48].reshape(-1, 64), digits.y_train[:48]  # 6 steps per epoch


def test_mask_update_steps_asks_the_one_source():
    assert mask_update_steps(FakePruning(), 20) == (3, 6, 9)

    class WithMethod:
        def mask_update_steps(self, total):
            return [0, 4, total, total + 5]

    assert mask_update_steps(WithMethod(), 12) == (4, 12)
    # A sparsity schedule answers for itself: its end step off the grid included.
    schedule = tfc.schedules.PolynomialSparsity(0.8, 0, 10, frequency=3)
    assert mask_update_steps(schedule, 20) == (3, 6, 9, 10)
    assert mask_update_steps(tfc.schedules.ConstantSparsity(0.5, 4), 20) == (4,)

    class OnlyAttributes:  # a second, drifting copy of the rule is no longer read
        begin_step, end_step, frequency = 0, 9, 3

    for wrong in (object(), OnlyAttributes()):
        with pytest.raises(ValueError, match="`pruning` must be"):
            mask_update_steps(wrong, 10)
        with pytest.raises(ValueError, match="`pruning` must be"):
            LearningRateRewinding(WarmupCosine(0.1, 4), pruning=wrong)


@pytest.mark.jax
def test_rewinding_callback_restarts_at_pruning_steps(small):
    base = WarmupCosine(0.1, decay_steps=4, warmup_steps=2)
    callback = LearningRateRewinding(base, pruning=FakePruning(), restart_steps=[11])
    model, rates = _fit_recording(callback, epochs=2, data=small)
    assert callback.restarts == (3, 6, 9, 11)
    expected = [float(base(float(rewound_step(s, (3, 6, 9, 11))))) for s in range(12)]
    np.testing.assert_allclose(rates, expected, rtol=1e-6)
    assert rates[3] == 0.0 and rates[5] == pytest.approx(0.1)  # re-warmed after step 3
    # Resuming from a checkpointed step continues the same sequence.
    _, first = _fit_recording(
        LearningRateRewinding(base, restart_steps=[3, 6, 9, 11]), 1, data=small
    )
    _, rest = _fit_recording(callback, epochs=1, model=model, data=small)
    np.testing.assert_allclose(
        rest, [float(base(float(rewound_step(s, (3, 6, 9, 11))))) for s in range(12, 18)], rtol=1e-6
    )
    np.testing.assert_allclose(first, expected[:6], rtol=1e-6)


def test_rewinding_callback_refuses_schedule_optimizer_and_round_trips(small):
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    model.compile(
        optimizer=keras.optimizers.SGD(WarmupCosine(0.1, 10)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    with pytest.raises(ValueError, match="float learning rate"):
        model.fit(*small, epochs=1, verbose=0, callbacks=[LearningRateRewinding(OneCycle(0.1, 10))])
    callback = LearningRateRewinding(OneCycle(0.1, 10), restart_steps=[4], period=5, rewind_to=1)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(callback))
    assert isinstance(clone, LearningRateRewinding)
    assert clone.get_config() == callback.get_config()
    assert [clone.rate_at(s) for s in range(12)] == [callback.rate_at(s) for s in range(12)]
    with pytest.raises(ValueError, match=r"`schedule` must be a step -> value callable, got 0.1"):
        LearningRateRewinding(0.1)
    assert tfc.callbacks.LearningRateRewinding is LearningRateRewinding
