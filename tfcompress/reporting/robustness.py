"""Robustness of a classifier to gradient attacks, with a check that the gradients are real.

A quantized or binary network can look robust to gradient attacks only because its
input gradients vanish: its logits are large, the softmax saturates, and in float32
the cross-entropy gradient ``softmax(z) - onehot(y)`` is exactly zero for every
example it classifies confidently. FGSM and PGD then cannot move the input and report
clean accuracy as robust accuracy (gradient masking, Athalye, Carlini & Wagner, ICML
2018). :func:`robustness` measures the input gradients, flags the run when they
vanish, and then attacks again with the logits divided by a temperature ``T``, which
keeps the softmax out of saturation without changing any prediction (the argmax of
``z / T`` is the argmax of ``z``).

The attacks, on an L-infinity ball of radius ``eps`` (inputs clipped to ``clip``):

* FGSM (Goodfellow, Shlens & Szegedy, ICLR 2015): ``x' = x + eps sign(grad_x L)``;
* PGD (Madry et al., ICLR 2018): a uniform random start in the ball, then ``steps``
  steps ``x <- proj(x + alpha sign(grad_x L))`` with ``alpha = 2.5 eps / steps``.

``L`` is the cross-entropy of the (tempered) logits with the true label.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from tfcompress.core.gradients import input_gradients
from tfcompress.reporting.table import format_table

__all__ = ["RobustnessReport", "robustness"]

# An example's input gradient counts as vanished when its largest entry is below this.
VANISHED = 1e-12


@dataclasses.dataclass
class RobustnessReport:
    """What :func:`robustness` measured (accuracies in [0, 1]).

    Attributes:
        samples: Examples attacked.
        eps: The L-infinity radius.
        clean_accuracy: Accuracy on the unperturbed examples.
        fgsm_accuracy, pgd_accuracy: Accuracy under each attack, at temperature 1.
        gradient_norm: Mean L1 norm of the input gradient of the loss, per example.
        vanished_fraction: Fraction of the correctly classified examples whose input
            gradient is (numerically) zero.
        vanishing: True when more than ``vanishing_threshold`` of them vanished: the
            attacks at temperature 1 do not measure robustness.
        temperature: The temperature of the second attack (None if it did not run).
        tempered_fgsm_accuracy, tempered_pgd_accuracy: Accuracy under the attacks on
            ``logits / temperature``; the numbers to read when ``vanishing``.
        tempered_vanished_fraction: Vanished fraction at that temperature.
    """

    samples: int
    eps: float
    clean_accuracy: float
    fgsm_accuracy: float
    pgd_accuracy: float
    gradient_norm: float
    vanished_fraction: float
    vanishing: bool
    temperature: float | None = None
    tempered_fgsm_accuracy: float | None = None
    tempered_pgd_accuracy: float | None = None
    tempered_vanished_fraction: float | None = None

    @property
    def robust_accuracy(self) -> float:
        """The lowest accuracy any attack reached (the tempered ones included)."""
        values = [self.fgsm_accuracy, self.pgd_accuracy]
        values += [
            v for v in (self.tempered_fgsm_accuracy, self.tempered_pgd_accuracy) if v is not None
        ]
        return min(values)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "robust_accuracy": self.robust_accuracy}

    def __str__(self) -> str:
        rows = [
            ["clean", "-", self.clean_accuracy, "-"],
            ["FGSM", "1", self.fgsm_accuracy, self.vanished_fraction],
            ["PGD", "1", self.pgd_accuracy, "-"],
        ]
        if self.temperature is not None:
            t = f"{self.temperature:.3g}"
            rows += [
                ["FGSM", t, self.tempered_fgsm_accuracy, self.tempered_vanished_fraction],
                ["PGD", t, self.tempered_pgd_accuracy, "-"],
            ]
        table = format_table(rows, ["attack", "temperature", "accuracy", "vanished grads"])
        flag = (
            "VANISHING GRADIENTS: the temperature-1 attacks do not measure robustness"
            if self.vanishing
            else "input gradients are alive"
        )
        return (
            f"robustness at eps={self.eps:g} on {self.samples} examples "
            f"(mean |grad_x L|_1 = {self.gradient_norm:.3g}; {flag})\n{table}"
        )


def _check(name: str, value: Any, low: float, high: float, open_low: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or (value <= low if open_low else value < low) or value > high:
        interval = f"({low:g}, {high:g}]" if open_low else f"[{low:g}, {high:g}]"
        raise ValueError(f"{name}={value!r} must be in {interval}")
    return value


def _split(data: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    elif hasattr(data, "x_test") and hasattr(data, "y_test"):
        x, y = data.x_test, data.y_test
    else:
        raise TypeError(
            "data must be (x, y) arrays or a dataset with x_test/y_test "
            f"(e.g. tfc.datasets.load_digits()), got {type(data).__name__}"
        )
    x, y = np.asarray(x, np.float32), np.asarray(y).reshape(-1)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"data has {len(x)} inputs and {len(y)} labels; expected the same, > 0")
    return x, y.astype(np.int64)


def _loss(y: np.ndarray, temperature: float, from_logits: bool):
    onehot = keras.ops.convert_to_tensor(np.eye(int(y.max()) + 1, dtype=np.float32)[y])

    def objective(outputs: Any) -> Any:
        outputs = keras.ops.cast(outputs, "float32")
        if not from_logits:  # probabilities: back to logits (up to a constant)
            outputs = keras.ops.log(keras.ops.clip(outputs, 1e-30, 1.0))
        logits = outputs / temperature
        classes = logits.shape[-1]
        target = (
            onehot[:, :classes]
            if onehot.shape[-1] >= classes
            else keras.ops.pad(onehot, [[0, 0], [0, classes - onehot.shape[-1]]])
        )
        return -keras.ops.sum(target * keras.ops.log_softmax(logits, axis=-1), axis=-1)

    return objective


def _batches(model, x, y, temperature, from_logits, batch_size):
    """Input gradients and outputs over ``x`` in batches."""
    grads, outputs = [], []
    for start in range(0, len(x), batch_size):
        sl = slice(start, start + batch_size)
        g, out = input_gradients(model, x[sl], _loss(y[sl], temperature, from_logits))
        grads.append(g)
        outputs.append(out)
    return np.concatenate(grads), np.concatenate(outputs)


def _accuracy(model, x, y, batch_size) -> float:
    outputs = np.concatenate(
        [
            np.asarray(model(x[i : i + batch_size], training=False))
            for i in range(0, len(x), batch_size)
        ]
    )
    return float(np.mean(np.argmax(outputs, -1) == y))


def _attacks(model, x, y, eps, steps, clip, temperature, from_logits, batch_size, rng):
    lo, hi = clip
    grad, outputs = _batches(model, x, y, temperature, from_logits, batch_size)
    flat = np.abs(grad.reshape(len(x), -1))
    # Over the examples the model gets right: those are the ones an attack has to move.
    correct = np.argmax(outputs, -1) == y
    dead = flat.max(axis=1) < VANISHED
    vanished = float(np.mean(dead[correct])) if correct.any() else 0.0
    fgsm = np.clip(x + eps * np.sign(grad), lo, hi)
    alpha = 2.5 * eps / steps
    adv = np.clip(x + rng.uniform(-eps, eps, size=x.shape).astype(np.float32), lo, hi)
    for _ in range(steps):
        g, _ = _batches(model, adv, y, temperature, from_logits, batch_size)
        adv = np.clip(np.clip(adv + alpha * np.sign(g), x - eps, x + eps), lo, hi)
    return (
        _accuracy(model, fgsm, y, batch_size),
        _accuracy(model, adv, y, batch_size),
        float(flat.sum(axis=1).mean()),
        vanished,
        outputs,  # the clean outputs, from the gradient pass
    )


def robustness(
    model: keras.Model,
    data: Any,
    eps: float = 0.1,
    *,
    steps: int = 10,
    clip: tuple[float, float] | None = (0.0, 1.0),
    from_logits: bool = True,
    temperature: float | str = "auto",
    vanishing_threshold: float = 0.5,
    samples: int | None = 512,
    batch_size: int = 128,
    seed: int = 0,
) -> RobustnessReport:
    """FGSM and PGD accuracy of a classifier, its input-gradient norm, and a vanishing flag.

    When more than ``vanishing_threshold`` of the correctly classified examples
    have a zero input gradient, the attacks are run again on ``logits / T``: with ``temperature="auto"``,
    ``T`` is the standard deviation of the clean logits (at least 1), which brings
    them to unit scale; a number sets ``T``; None never reruns. See the module
    docstring for the math.

    Args:
        model: A classifier of one input; outputs logits (``from_logits=True``) or
            probabilities.
        data: ``(x, y)`` with integer labels, or a dataset with ``x_test``/``y_test``.
        eps: The L-infinity radius, in input units (> 0).
        steps: PGD steps (>= 1).
        clip: The valid input range, or None for no clipping (digits: [0, 1]).
        from_logits: Whether the model outputs logits.
        temperature: ``"auto"``, a number > 0, or None.
        vanishing_threshold: Fraction of vanished gradients that raises the flag, in (0, 1].
        samples: Attack the first this many examples (None: all).
        batch_size: Examples per gradient computation.
        seed: PGD's random start.

    Returns:
        A :class:`RobustnessReport` (``print`` it for a table).

    Raises:
        ValueError: For a bad ``eps``, ``steps``, ``clip``, ``temperature``,
            ``vanishing_threshold``, ``samples`` or ``batch_size``, or mismatched data,
            before anything is computed.
        TypeError: For data of another kind, or a non-number where one is expected.

    Example:
        >>> report = tfc.reporting.robustness(model, tfc.datasets.load_digits(), eps=0.1)
        >>> print(report)
        >>> report.vanishing, report.robust_accuracy
    """
    eps = _check("eps", eps, 0.0, np.inf)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps={steps!r} must be an integer >= 1")
    if clip is not None:
        if len(clip) != 2 or not float(clip[0]) < float(clip[1]):
            raise ValueError(f"clip={clip!r} must be (low, high) with low < high, or None")
        clip = (float(clip[0]), float(clip[1]))
    else:
        clip = (-np.inf, np.inf)
    if temperature is not None and temperature != "auto":
        temperature = _check("temperature", temperature, 0.0, np.inf)
    vanishing_threshold = _check("vanishing_threshold", vanishing_threshold, 0.0, 1.0)
    for name, value in (("samples", samples), ("batch_size", batch_size)):
        if value is None and name == "samples":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}={value!r} must be an integer >= 1")
    x, y = _split(data)
    if samples is not None:
        x, y = x[:samples], y[:samples]
    rng = np.random.default_rng(seed)
    fgsm, pgd, norm, vanished, outputs = _attacks(
        model, x, y, eps, steps, clip, 1.0, from_logits, batch_size, rng
    )
    clean = float(np.mean(np.argmax(outputs, -1) == y))
    report = RobustnessReport(
        samples=len(x),
        eps=eps,
        clean_accuracy=clean,
        fgsm_accuracy=fgsm,
        pgd_accuracy=pgd,
        gradient_norm=norm,
        vanished_fraction=vanished,
        vanishing=vanished > vanishing_threshold,
    )
    if report.vanishing and temperature is not None:
        if temperature == "auto":
            logits = np.log(np.clip(outputs, 1e-30, 1.0)) if not from_logits else outputs
            temperature = max(1.0, float(np.std(logits)))
        t_fgsm, t_pgd, _, t_vanished, _ = _attacks(
            model, x, y, eps, steps, clip, float(temperature), from_logits, batch_size,
            np.random.default_rng(seed),
        )  # fmt: skip
        report.temperature = float(temperature)
        report.tempered_fgsm_accuracy = t_fgsm
        report.tempered_pgd_accuracy = t_pgd
        report.tempered_vanished_fraction = t_vanished
    return report
