"""tfc.reporting.robustness: FGSM/PGD against NumPy references, the vanishing-gradient flag."""

import keras
import numpy as np
import pytest

import tfcompress as tfc

pytestmark = pytest.mark.jax


def _linear(seed=0, scale=1.0):
    """A linear classifier on 6 inputs, 3 classes: logits = scale * (x W + b)."""
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=(6, 3)).astype("float32"), rng.normal(size=3).astype("float32")
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(3), keras.layers.Rescaling(scale)]
    )
    model.layers[0].set_weights([w, b])
    return model, w, b


def _data(n=64, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(n, 6)).astype("float32")
    return x, rng.integers(0, 3, size=n)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_fgsm_matches_the_numpy_gradient_of_the_cross_entropy():
    model, w, b = _linear()
    x, y = _data()
    report = tfc.reporting.robustness(model, (x, y), eps=0.2, steps=3, clip=(0.0, 1.0))
    # dL/dx = (softmax(xW + b) - onehot(y)) W^T
    grad = (_softmax(x @ w + b) - np.eye(3)[y]) @ w.T
    adv = np.clip(x + 0.2 * np.sign(grad), 0, 1)
    expected = np.mean(np.argmax(adv @ w + b, -1) == y)
    assert report.fgsm_accuracy == pytest.approx(expected)
    assert report.clean_accuracy == pytest.approx(np.mean(np.argmax(x @ w + b, -1) == y))
    assert report.gradient_norm == pytest.approx(np.abs(grad).sum(1).mean(), rel=1e-4)
    assert not report.vanishing and report.temperature is None
    # PGD is at least as strong as FGSM here (same ball, more steps, random start).
    assert report.pgd_accuracy <= report.fgsm_accuracy + 1 / len(x)
    assert report.robust_accuracy == min(report.fgsm_accuracy, report.pgd_accuracy)
    assert "FGSM" in str(report) and "alive" in str(report)


def test_pgd_accuracy_falls_with_the_radius():
    model, _, _ = _linear(seed=2)
    x, y = _data(seed=3)
    tiny = tfc.reporting.robustness(model, (x, y), eps=1e-6, steps=5, clip=None)
    large = tfc.reporting.robustness(model, (x, y), eps=10.0, steps=20, clip=None)
    assert tiny.pgd_accuracy == tiny.fgsm_accuracy == tiny.clean_accuracy  # nothing moves
    assert large.pgd_accuracy < 0.05  # a linear model is broken by a large enough step
    # The input range binds: inside [0, 1] the same radius cannot do as much.
    boxed = tfc.reporting.robustness(model, (x, y), eps=10.0, steps=20, clip=(0.0, 1.0))
    assert boxed.pgd_accuracy >= large.pgd_accuracy


def test_saturated_logits_raise_the_flag_and_the_temperature_restores_the_attack():
    plain, _, _ = _linear(seed=4)
    saturated, _, _ = _linear(seed=4, scale=1e4)  # same predictions, softmax saturated
    x, y = _data(n=96, seed=5)
    alive = tfc.reporting.robustness(plain, (x, y), eps=0.3)
    dead = tfc.reporting.robustness(saturated, (x, y), eps=0.3)
    assert not alive.vanishing and alive.vanished_fraction == 0.0
    assert dead.clean_accuracy == alive.clean_accuracy
    assert dead.vanishing and dead.vanished_fraction > 0.5
    # At temperature 1 the attack barely moves the confidently classified examples...
    assert dead.fgsm_accuracy > alive.fgsm_accuracy
    # ...at T ~ std(logits) it is the plain model's attack again.
    assert dead.temperature > 1e3
    assert dead.tempered_vanished_fraction == 0.0
    assert dead.tempered_fgsm_accuracy == pytest.approx(alive.fgsm_accuracy, abs=2 / len(x))
    assert dead.robust_accuracy <= dead.tempered_fgsm_accuracy
    assert "VANISHING" in str(dead)
    never = tfc.reporting.robustness(saturated, (x, y), eps=0.3, temperature=None)
    assert never.vanishing and never.temperature is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eps": 0}, "eps=0.0 must be in"),
        ({"eps": -0.1}, "eps=-0.1 must be in"),
        ({"eps": float("nan")}, "eps=nan"),
        ({"steps": 0}, "steps=0 must be an integer >= 1"),
        ({"clip": (1.0, 0.0)}, "clip=.* low < high"),
        ({"temperature": -1}, "temperature=-1.0 must be in"),
        ({"vanishing_threshold": 0}, "vanishing_threshold=0.0 must be in"),
        ({"samples": 0}, "samples=0 must be an integer >= 1"),
        ({"batch_size": 0}, "batch_size=0 must be an integer >= 1"),
    ],
)
def test_bad_arguments_raise_before_anything_runs(kwargs, match):
    model, _, _ = _linear()
    with pytest.raises(ValueError, match=match):
        tfc.reporting.robustness(model, _data(), **kwargs)


def test_bad_data_is_named():
    model, _, _ = _linear()
    x, y = _data()
    with pytest.raises(ValueError, match="64 inputs and 10 labels"):
        tfc.reporting.robustness(model, (x, y[:10]))
    with pytest.raises(TypeError, match="data must be"):
        tfc.reporting.robustness(model, x)
    with pytest.raises(TypeError, match="eps must be a number"):
        tfc.reporting.robustness(model, (x, y), eps="0.1")
