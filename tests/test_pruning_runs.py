"""Pruning runs: one source for update steps, own step count, masks that persist, exact end,
sparsity in every callback's logs (TensorBoard in any order), one rule for numbers as strings."""

import glob
import itertools

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.callbacks import (
    DynamicSparseTraining,
    GradualPruning,
    LearningRateRewinding,
)
from tfcompress.pruning import PruningMask
from tfcompress.schedules import ConstantSparsity, PolynomialSparsity, WarmupCosine

UNITS = 16 * 32  # the d1 kernel


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 16)).astype("float32"), rng.integers(0, 4, n)


def _mlp(seed=0, optimizer="adam"):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(32, activation="relu", name="d1"),
            keras.layers.Dense(4, name="d2"),
        ]
    )
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _zeros(model, name="d1"):
    return float(np.mean(keras.ops.convert_to_numpy(model.get_layer(name).kernel) == 0))


class _MaskLog(keras.callbacks.Callback):
    """Listed after the pruning callback: the masks in force at each optimizer step."""

    def __init__(self):
        super().__init__()
        self.masks = {}
        self.zeros = {}

    def _record(self, step):
        kernels = [self.model.get_layer(n).kernel for n in ("d1", "d2")]
        self.masks[step] = tuple(
            keras.ops.convert_to_numpy(k.constraint.mask).tobytes()
            if isinstance(k.constraint, PruningMask)
            else b""
            for k in kernels
        )
        self.zeros[step] = float(np.mean(keras.ops.convert_to_numpy(kernels[0]) == 0))

    def on_train_begin(self, logs=None):  # the masks before the fit, keyed just before it
        self._record(int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) - 0.5)

    def on_train_batch_begin(self, batch, logs=None):
        self._record(int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))

    def on_train_end(self, logs=None):
        self._record(int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))


def _changes(masks):
    steps = sorted(masks)
    return {b for a, b in itertools.pairwise(steps) if masks[a] != masks[b]}


@pytest.mark.parametrize(
    "make",
    [
        lambda d: GradualPruning(0.75, begin_step=0, end_step=12, frequency=4),
        lambda d: GradualPruning(0.75, begin_step=1, end_step=11, frequency=4),  # end off grid
        lambda d: GradualPruning(0.75, begin_step=2, frequency=3),  # end_step=None
        lambda d: GradualPruning(0.6, begin_step=5, frequency=3, schedule="constant"),
        lambda d: GradualPruning(
            None, begin_step=2, end_step=14, frequency=5, schedule=lambda s: s / 40
        ),
        lambda d: GradualPruning(0.5, schedule=PolynomialSparsity(0.7, 3, 13, frequency=2)),
        lambda d: DynamicSparseTraining(0.7, "uniform", update_frequency=4, end_step=14, data=d),
    ],
    ids=["polynomial", "end-off-grid", "end-none", "constant", "callable", "schedule", "rigl"],
)
def test_rewinding_restarts_exactly_where_the_masks_changed(make):
    x, y = _data()
    model = _mlp(optimizer=keras.optimizers.SGD(0.05))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # 4 steps of earlier training
    pruning = make((x, y))
    rewind = LearningRateRewinding(
        WarmupCosine(0.05, decay_steps=6, warmup_steps=1), pruning=pruning
    )
    log = _MaskLog()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[rewind, pruning, log])
    changed = _changes(log.masks)
    assert changed, "the run changed no mask"
    assert set(rewind.restarts) == changed
    assert min(changed) >= 4  # the run starts after the earlier training


@pytest.mark.jax
def test_steps_count_from_the_callbacks_start_not_the_optimizers():
    x, y = _data()
    model = _mlp()
    model.fit(x, y, batch_size=8, epochs=5, verbose=0)  # 40 steps of earlier training
    log = _MaskLog()
    pruning = GradualPruning(0.75, begin_step=0, end_step=12, frequency=4, layers="d1")
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[pruning, log])
    schedule = PolynomialSparsity(0.75, 0, 12)
    assert log.zeros[40] == 0.0  # gradual, not one-shot at the first batch
    for own in (4, 8, 12):
        assert log.zeros[40 + own] == round(schedule(own) * UNITS) / UNITS
    assert pruning.progress.step == 16


def test_end_step_equal_to_the_run_length_reaches_the_target_exactly():
    x, y = _data()
    model = _mlp()
    pruning = GradualPruning(0.8, begin_step=0, end_step=16, frequency=6, layers="d1")
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[pruning])  # 16 steps
    assert _zeros(model) == round(0.8 * UNITS) / UNITS
    assert history.history["sparsity"][-1] == pytest.approx(round(0.8 * UNITS) / UNITS)
    # The target holds from end_step on: a longer run keeps it and updates no more.
    pruning2 = GradualPruning(0.8, begin_step=0, end_step=10, frequency=5, layers="d1")
    model2 = _mlp()
    log = _MaskLog()
    model2.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[pruning2, log])
    assert _changes(log.masks) == {5, 10}
    assert all(log.zeros[s] == round(0.8 * UNITS) / UNITS for s in range(10, 17))


@pytest.mark.jax
def test_masks_persist_in_later_fits_and_in_the_keras_file(tmp_path):
    x, y = _data()
    model = _mlp()
    pruning = GradualPruning(0.8, begin_step=0, end_step=8, frequency=4)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[pruning])
    pattern = keras.ops.convert_to_numpy(model.get_layer("d1").kernel) == 0
    assert pattern.mean() == round(0.8 * UNITS) / UNITS
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)  # no callback
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("d1").kernel) == 0, pattern
    )

    path = tmp_path / "pruned.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    constraint = loaded.get_layer("d1").kernel.constraint
    assert isinstance(constraint, PruningMask)
    np.testing.assert_array_equal(constraint.value() == 0, pattern)
    loaded.fit(x, y, batch_size=8, epochs=2, verbose=0)
    kernel = keras.ops.convert_to_numpy(loaded.get_layer("d1").kernel)
    np.testing.assert_array_equal(kernel == 0, pattern)
    # The config carries the mask compactly (1 bit per weight, base64).
    config = loaded.get_layer("d1").get_config()["kernel_constraint"]
    assert config["class_name"] == "PruningMask"
    assert len(config["config"]["bits"]) == 4 * ((UNITS // 8 + 2) // 3)
    # A clone made from the config keeps the masks too.
    clone = keras.models.clone_model(loaded)
    np.testing.assert_array_equal(clone.get_layer("d1").kernel.constraint.value() == 0, pattern)

    # Removed on purpose, through the documented function: training regrows.
    assert tfc.remove_masks(loaded) == 2
    assert loaded.get_layer("d1").kernel.constraint is None
    assert loaded.get_layer("d1").get_config()["kernel_constraint"] is None
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert _zeros(loaded) < 0.05
    with pytest.raises(ValueError, match="model must be a Keras model"):
        tfc.remove_masks("pruned.keras")


def test_shrink_and_export_of_a_masked_model(tmp_path):
    x, y = _data()
    model = _mlp()
    pruning = GradualPruning(0.5, schedule="constant", granularity="channel", layers="d1")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[pruning])
    small = tfc.shrink_model(model)
    assert small.get_layer("d1").units == 16
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert small.get_layer("d1").kernel.constraint.mask.shape == (16, 16)
    report = tfc.tflite_export.export(model, str(tmp_path / "m.tflite"), None, verify_data=x)
    assert report.max_abs_diff < 1e-4


@pytest.mark.parametrize("first", ["tensorboard", "pruning"])
def test_sparsity_reaches_tensorboard_whatever_the_order(tmp_path, first):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    x, y = _data()
    model = _mlp()
    pruning = GradualPruning(0.5, begin_step=0, end_step=8, frequency=4, layers="d1")
    board = keras.callbacks.TensorBoard(str(tmp_path))
    callbacks = [board, pruning] if first == "tensorboard" else [pruning, board]
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, validation_data=(x, y), callbacks=callbacks)
    (train_dir,) = glob.glob(str(tmp_path / "train"))
    events = EventAccumulator(train_dir, size_guidance={"tensors": 0})
    events.Reload()
    tags = events.Tags()["tensors"]
    assert {"epoch_sparsity", "epoch_sparsity/d1"} <= set(tags), tags
    values = [
        float(keras.ops.convert_to_numpy(_tensor(e))) for e in events.Tensors("epoch_sparsity")
    ]
    assert values[-1] == pytest.approx(0.5)
    validation = EventAccumulator(str(tmp_path / "validation"), size_guidance={"tensors": 0})
    validation.Reload()
    assert "epoch_sparsity" not in validation.Tags()["tensors"]  # no val_sparsity


def _tensor(event):
    from tensorboard.util import tensor_util

    return tensor_util.make_ndarray(event.tensor_proto)


@pytest.mark.parametrize(
    "build, argument",
    [
        (lambda: GradualPruning("0.8"), "target_sparsity"),
        (lambda: GradualPruning(0.8, end_step="90"), "end_step"),
        (lambda: GradualPruning(0.8, begin_step="0"), "begin_step"),
        (lambda: GradualPruning(0.8, frequency="10"), "frequency"),
        (lambda: GradualPruning(0.8, power="3"), "power"),
        (lambda: PolynomialSparsity("0.5"), "final_sparsity"),
        (lambda: ConstantSparsity(0.5, begin_step="2"), "begin_step"),
        (lambda: DynamicSparseTraining("0.9"), "sparsity"),
        (lambda: DynamicSparseTraining(0.9, update_frequency="5"), "update_frequency"),
        (lambda: DynamicSparseTraining(0.9, drop_fraction="0.3"), "drop_fraction"),
        (lambda: tfc.prune_at_init(_mlp(), _data(), "0.9"), "sparsity"),
        (lambda: tfc.ops.pruning.compute_masks([np.ones((4, 4))], "0.5"), "sparsity"),
    ],
)
def test_numbers_given_as_strings_are_refused_everywhere(build, argument):
    with pytest.raises(ValueError, match=rf"^{argument} must be .*, got '[0-9.]+' \(a string\)$"):
        build()


@pytest.mark.jax
def test_numbers_of_any_numeric_type_are_accepted():
    pruning = GradualPruning(np.float32(0.75), begin_step=np.int64(0), end_step=np.int32(12))
    assert pruning.target_sparsity == 0.75 and pruning.end_step == 12
    assert type(pruning.end_step) is int
    with pytest.raises(ValueError, match=r"end_step must be an integer >= 1 or None, got 12\.0"):
        GradualPruning(0.8, end_step=12.0)
    with pytest.raises(ValueError, match="target_sparsity must be a number in"):
        GradualPruning(True)
