"""TFMOT's ``prune_low_magnitude`` on one of our trained Keras 3 models, in a subprocess.

TFMOT 0.8 runs on legacy ``tf_keras`` only (``TF_USE_LEGACY_KERAS=1``), which
cannot share a process with Keras 3, so the comparison arm runs in a child
Python (:mod:`tfcompress.bench._tfmot_worker`): the parent sends the trained
weights, a plain description of the Sequential model and the data; the child
rebuilds the model in ``tf_keras``, prunes it during the same fine-tune (same
epochs, batch size, learning rate and polynomial schedule as ours), and sends back
the stripped weights, its own accuracy and the TFLite files its converter wrote.
This is the one place the project runs TFMOT pruning (the benchmark suite's
``tfmot_magnitude`` method and ``benchmarks/pruning.py``).

The child runs ``sys.executable`` unless ``TFCOMPRESS_TFMOT_PYTHON`` names
another interpreter (one with ``tensorflow-model-optimization`` and ``tf_keras``,
the ``[bench]`` extra).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfcompress.bench._tfmot_worker import RESULT_PREFIX

_WORKER = Path(__file__).with_name("_tfmot_worker.py")

__all__ = [
    "TFMOTResult",
    "TFMOTUnavailableError",
    "sequential_spec",
    "tfmot_available",
    "tfmot_prune",
]

PYTHON_VARIABLE = "TFCOMPRESS_TFMOT_PYTHON"

# Layer classes the child can rebuild, with the configuration keys it passes on
# (tf_keras takes these with the same meaning as Keras 3).
_KEYS = {
    "Conv2D": ("filters", "kernel_size", "strides", "padding", "dilation_rate", "activation",
               "use_bias", "name"),
    "Dense": ("units", "activation", "use_bias", "name"),
    "MaxPooling2D": ("pool_size", "strides", "padding", "name"),
    "AveragePooling2D": ("pool_size", "strides", "padding", "name"),
    "GlobalAveragePooling2D": ("name",),
    "Flatten": ("name",),
    "Dropout": ("rate", "name"),
    "Activation": ("activation", "name"),
}  # fmt: skip
_availability: dict[str, str | None] = {}


class TFMOTUnavailableError(RuntimeError):
    """TFMOT (or tf_keras) cannot be imported by the Python that would run it."""


@dataclasses.dataclass
class TFMOTResult:
    """What the TFMOT child returned.

    Attributes:
        weights: The stripped model's weights, in ``model.get_weights()`` order.
        accuracy: Top-1 accuracy of the stripped ``tf_keras`` model on the test split.
        sparsity: Fraction of zeros in its kernels (weights of rank >= 2).
        files: ``{mode: flatbuffer bytes}`` of the TFLite files it wrote
            (``"float"``: TFMOT's documented path, ``strip_pruning`` then the
            default converter; ``"int8"``: full-integer with representative data).
        epoch_time_ratio: Fastest pruned epoch over fastest plain epoch (same
            fit without pruning), when timed; else None.
        seconds: Wall time of the pruning fine-tune in the child.
        versions: TFMOT and tf_keras versions.
    """

    weights: list[np.ndarray]
    accuracy: float
    sparsity: float
    files: dict[str, bytes]
    epoch_time_ratio: float | None
    seconds: float
    versions: dict[str, str]


def _python(python: str | None) -> str:
    return python or os.environ.get(PYTHON_VARIABLE) or sys.executable


def _child_environment() -> dict[str, str]:
    return dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")


def tfmot_available(python: str | None = None) -> str | None:
    """None if ``python`` can import TFMOT and tf_keras, else the reason it cannot.

    The answer is cached per interpreter. For the running interpreter it looks
    the packages up without importing them.
    """
    python = _python(python)
    if python not in _availability:
        if python == sys.executable:
            missing = [
                name
                for name in ("tensorflow_model_optimization", "tf_keras")
                if importlib.util.find_spec(name) is None
            ]
            reason = f"{', '.join(missing)} not installed" if missing else None
        else:
            try:
                done = subprocess.run(
                    [python, "-c", "import tensorflow_model_optimization, tf_keras"],
                    capture_output=True,
                    text=True,
                    env=_child_environment(),
                    timeout=300,
                )
            except OSError as error:  # no such interpreter, or not executable
                reason = f"{type(error).__name__}: {error}"
            else:
                lines = done.stderr.strip().splitlines()
                reason = None if done.returncode == 0 else (lines[-1] if lines else "import failed")
        _availability[python] = reason
    return _availability[python]


def sequential_spec(model: keras.Model) -> dict:
    """A plain description of a Sequential model that the child rebuilds in tf_keras.

    Raises:
        ValueError: If ``model`` is not a built ``keras.Sequential`` or holds a
            layer class the child cannot rebuild (named in the message).
    """
    if not isinstance(model, keras.Sequential) or not model.built:
        raise ValueError(
            f"TFMOT's arm rebuilds a built keras.Sequential model in tf_keras; got "
            f"{type(model).__name__} {getattr(model, 'name', '')!r}"
        )
    layers = []
    for layer in model.layers:
        name = type(layer).__name__
        if type(layer) is not getattr(keras.layers, name, None) or name not in _KEYS:
            raise ValueError(
                f"layer {layer.name!r} is a {name}; the TFMOT arm rebuilds only "
                f"{sorted(_KEYS)} layers in tf_keras"
            )
        config = layer.get_config()
        layers.append({"class_name": name, "config": {k: config[k] for k in _KEYS[name]}})
    return {"name": model.name, "input_shape": list(model.input_shape[1:]), "layers": layers}


def tfmot_prune(
    model: keras.Model,
    data: Any,
    sparsity: float,
    *,
    epochs: int,
    end_step: int,
    frequency: int,
    batch_size: int = 32,
    learning_rate: float = 5e-4,
    seed: int = 0,
    exports: Sequence[str] = ("float",),
    representative_data: np.ndarray | None = None,
    time_epochs: bool = False,
    whole_batches: bool = False,
    python: str | None = None,
    timeout: float = 1200,
) -> TFMOTResult:
    """Fine-tunes a copy of ``model`` with TFMOT's ``prune_low_magnitude`` in a subprocess.

    The schedule is TFMOT's ``PolynomialDecay(0 -> sparsity, begin 0, end_step,
    frequency)`` (cubic, Zhu & Gupta 2017), the fit ``Adam(learning_rate)``,
    sparse categorical cross-entropy on logits, ``epochs`` passes in batches of
    ``batch_size``. ``model`` is not changed.

    Args:
        model: A trained, built ``keras.Sequential`` classifier (logits output).
        data: An object with ``x_train``, ``y_train``, ``x_test``, ``y_test``.
        sparsity: Final sparsity of every pruned kernel, in [0, 1).
        epochs: Fine-tune epochs.
        end_step: Step at which the target sparsity is reached.
        frequency: Steps between mask updates.
        batch_size: Fine-tune batch size.
        learning_rate: Adam learning rate of the fine-tune.
        seed: ``tf_keras.utils.set_random_seed`` of the child.
        exports: TFLite files to write: ``"float"`` and/or ``"int8"``.
        representative_data: Inputs calibrating the int8 file (needed for ``"int8"``).
        time_epochs: Also fit the plain model the same way and report the epoch
            time ratio.
        whole_batches: Reshuffle every epoch with ``seed`` and drop the last
            partial batch, as the suite's fine-tune does (False: Keras' array
            batching, partial batch included).
        python: The interpreter to run (default ``TFCOMPRESS_TFMOT_PYTHON`` or
            this one).
        timeout: Seconds before the child is stopped.

    Returns:
        A :class:`TFMOTResult`.

    Raises:
        TFMOTUnavailableError: The interpreter cannot import TFMOT or tf_keras.
        ValueError: An unsupported model (see :func:`sequential_spec`), a
            sparsity outside [0, 1), an unknown export mode, or ``"int8"``
            without representative data.
        RuntimeError: The child failed (its last output lines are in the message).
    """
    spec = sequential_spec(model)
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be in [0, 1); received {sparsity!r}")
    unknown = [mode for mode in exports if mode not in ("float", "int8")]
    if unknown:
        raise ValueError(f"exports must hold 'float' and/or 'int8'; received {list(exports)}")
    if "int8" in exports and representative_data is None:
        raise ValueError("exports=('int8',) needs representative_data (calibration inputs)")
    python = _python(python)
    reason = tfmot_available(python)
    if reason is not None:
        raise TFMOTUnavailableError(
            f"TFMOT cannot run in {python} ({reason}); install the bench extra "
            "(pip install -e '.[bench]': tensorflow-model-optimization and tf_keras) or point "
            f"{PYTHON_VARIABLE} at a Python that has them"
        )
    weights = model.get_weights()
    config = {
        "model": spec,
        "weights": len(weights),
        "sparsity": float(sparsity),
        "epochs": int(epochs),
        "end_step": int(end_step),
        "frequency": int(frequency),
        "batch_size": int(batch_size),
        "learning_rate": float(learning_rate),
        "seed": int(seed),
        "exports": list(exports),
        "time_epochs": bool(time_epochs),
        "whole_batches": bool(whole_batches),
    }
    with tempfile.TemporaryDirectory(prefix="tfcompress-tfmot-") as folder:
        folder = Path(folder)
        arrays = {f"w{i:04d}": w for i, w in enumerate(weights)}
        arrays.update(x=data.x_train, y=data.y_train, xt=data.x_test, yt=data.y_test)
        if representative_data is not None:
            arrays["rep"] = np.asarray(representative_data, np.float32)
        np.savez(folder / "inputs.npz", **arrays)
        (folder / "config.json").write_text(json.dumps(config))
        done = subprocess.run(
            [python, str(_WORKER), str(folder / "inputs.npz"),
             str(folder / "config.json"), str(folder)],
            capture_output=True, text=True, env=_child_environment(), timeout=timeout,
        )  # fmt: skip
        line = next(
            (s for s in done.stdout.splitlines() if s.startswith(RESULT_PREFIX)),
            None,
        )
        if done.returncode != 0 or line is None:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
            raise RuntimeError(f"the TFMOT subprocess failed (exit {done.returncode}):\n{tail}")
        result = json.loads(line[len(RESULT_PREFIX) :])
        with np.load(folder / "weights.npz") as archive:
            pruned = [archive[f"w{i:04d}"] for i in range(len(weights))]
        files = {mode: Path(path).read_bytes() for mode, path in result["files"].items()}
    if not result["finite"]:
        raise RuntimeError("the TFMOT-pruned model gives non-finite outputs")
    return TFMOTResult(
        weights=pruned,
        accuracy=result["accuracy"],
        sparsity=result["sparsity"],
        files=files,
        epoch_time_ratio=result["epoch_time_ratio"],
        seconds=result["seconds"],
        versions=result["versions"],
    )
