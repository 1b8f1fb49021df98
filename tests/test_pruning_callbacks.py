"""GradualPruning / KeepSparsity / DynamicSparseTraining / prune_at_init during real fits."""

import csv

import keras
import numpy as np
import pytest
from crash import CrashAt

import tfcompress as tfc
from tfcompress.callbacks import DynamicSparseTraining, GradualPruning, KeepSparsity
from tfcompress.pruning import PruningMask


def _data(n=64, shape=(16,), classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)).astype("float32"), rng.integers(0, classes, n)


def _mlp(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(32, activation="relu", name="d1"),
            keras.layers.Dense(4, name="d2"),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _zeros(variable):
    return float(np.mean(keras.ops.convert_to_numpy(variable) == 0))


class _Recorder(keras.callbacks.Callback):
    """Listed after the pruning callback: sees each step's masks before the step runs."""

    def __init__(self, variable):
        super().__init__()
        self.variable, self.seen = variable, {}

    def on_train_batch_begin(self, batch, logs=None):
        if keras.backend.backend() == "jax":
            self.model.jax_state_sync()  # the JAX trainer keeps state outside variables
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self.seen[step] = _zeros(self.variable)


@pytest.mark.jax
@pytest.mark.parametrize(
    "granularity, units",
    [("unstructured", 16 * 32), ("block", 16 * 32 // 4), ("channel", 32), ("2:4", 16 * 32)],
)
def test_sparsity_equals_schedule_at_every_pruning_step(granularity, units):
    model = _mlp()
    x, y = _data()
    target = 0.5 if granularity == "2:4" else 0.75
    pruning = GradualPruning(
        target, begin_step=2, end_step=14, frequency=4, granularity=granularity
    )
    recorder = _Recorder(model.get_layer("d1").kernel)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[pruning, recorder])
    schedule = tfc.schedules.PolynomialSparsity(target, 2, 14)
    for step in (2, 6, 10, 14):
        expected = round(schedule(step) * units) / units
        assert recorder.seen[step] == pytest.approx(expected, abs=1e-9), step
    assert recorder.seen[1] == 0.0
    # between updates the compiled step keeps the masks: nothing grows back
    assert recorder.seen[13] == recorder.seen[10]
    if granularity == "2:4":
        groups = keras.ops.convert_to_numpy(model.get_layer("d1").kernel).reshape(4, 4, 32)
        assert np.all(np.count_nonzero(groups, axis=1) == 2)


def test_every_kernel_layer_type_is_pruned_in_place(tmp_path):
    inputs = keras.Input((8, 8, 3))
    tokens = keras.Input((5,), dtype="int32")
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)
    x = keras.layers.Reshape((16, 8))(x)
    x = keras.layers.Conv1D(8, 3, name="conv1d")(x)
    x = keras.layers.EinsumDense("abc,cd->abd", output_shape=(14, 8), name="einsum")(x)
    e = keras.layers.Embedding(50, 8, name="embedding")(tokens)
    x = keras.layers.Concatenate(axis=1)([x, e])
    outputs = keras.layers.Dense(3, name="dense")(keras.layers.Flatten()(x))
    model = keras.Model([inputs, tokens], outputs)
    model.compile("sgd", "mse")
    rng = np.random.default_rng(0)
    data = [rng.standard_normal((16, 8, 8, 3)).astype("float32"), rng.integers(0, 50, (16, 5))]
    names = [(layer.name, type(layer)) for layer in model.layers]
    history = model.fit(
        data,
        np.zeros((16, 3)),
        epochs=1,
        verbose=0,
        callbacks=[GradualPruning(0.6, schedule="constant")],
    )
    assert [(layer.name, type(layer)) for layer in model.layers] == names
    for name, attr in [
        ("conv", "kernel"),
        ("depthwise", "kernel"),
        ("conv1d", "kernel"),
        ("einsum", "kernel"),
        ("embedding", "embeddings"),
        ("dense", "kernel"),
    ]:
        variable = getattr(model.get_layer(name), attr)
        assert _zeros(variable) == pytest.approx(0.6, abs=0.02), name
        assert history.history[f"sparsity/{name}"][-1] == pytest.approx(_zeros(variable))
        assert isinstance(variable.constraint, PruningMask)  # the masks stay with the model


def test_logs_reach_csv_logger_and_masks_stay_until_removed(tmp_path):
    model = _mlp()
    x, y = _data()
    log = tmp_path / "log.csv"
    pruning = GradualPruning(0.5, begin_step=0, end_step=8, frequency=2, layers=["d1"])
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[pruning, keras.callbacks.CSVLogger(str(log))],
    )
    rows = list(csv.DictReader(log.open()))
    assert float(rows[-1]["sparsity"]) == pytest.approx(0.5)
    assert float(rows[-1]["sparsity/d1"]) == pytest.approx(0.5)
    assert _zeros(model.get_layer("d2").kernel) == 0.0
    # A later fit without the callback keeps the zeros ...
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert _zeros(model.get_layer("d1").kernel) == 0.5
    # ... until the masks are removed on purpose.
    assert tfc.remove_masks(model) == 1
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert _zeros(model.get_layer("d1").kernel) < 0.01


def test_keras_save_load_without_callback_predicts_identically_and_resumes(tmp_path):
    model = _mlp()
    x, y = _data()
    pruning = GradualPruning(0.8, begin_step=0, end_step=15, frequency=3)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[pruning])  # 8 steps
    path = tmp_path / "pruned.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    assert int(loaded.optimizer.iterations.numpy()) == 8
    before = [keras.ops.convert_to_numpy(model.get_layer(n).kernel) == 0 for n in ("d1", "d2")]
    # Resuming from the file continues the schedule with the same masks.
    resumed = GradualPruning(0.8, begin_step=0, end_step=15, frequency=3)
    recorder = _Recorder(loaded.get_layer("d1").kernel)
    loaded.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[resumed, recorder])
    # step 8 is not an update step: the masks re-derived from the file are in force
    assert recorder.seen[8] == pytest.approx(float(before[0].mean()))
    assert recorder.seen[9] > recorder.seen[8]
    after = keras.ops.convert_to_numpy(loaded.get_layer("d1").kernel) == 0
    assert np.all(after[before[0]])  # what was pruned stays pruned
    assert after.mean() == pytest.approx(0.8, abs=1 / 512)


def _run(tmp_path, interrupt, backup_first=True, earlier_epochs=0):
    x, y = _data(n=48)
    model = _mlp(seed=3)

    def callbacks(extra=()):
        backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
        pruning = GradualPruning(0.7, begin_step=3, end_step=30, frequency=3)
        listed = [backup, pruning] if backup_first else [pruning, backup]
        return [*listed, *extra]

    fit = dict(batch_size=8, epochs=6, verbose=0, shuffle=False)
    if earlier_epochs:  # training before pruning: the run counts from its own start
        model.fit(x, y, batch_size=8, epochs=earlier_epochs, verbose=0, shuffle=False)
    if interrupt:
        with pytest.raises(KeyboardInterrupt):
            stop = CrashAt(21 + 6 * earlier_epochs)  # mid epoch 4
            model.fit(x, y, callbacks=callbacks([stop]), **fit)
        model = _mlp(seed=99)  # a fresh process would rebuild the model
    model.fit(x, y, callbacks=callbacks(), **fit)
    return model


@pytest.mark.parametrize(
    "backup_first, earlier_epochs", [(True, 0), (False, 2)], ids=["backup-first", "after-training"]
)
def test_interrupted_run_resumed_with_backup_and_restore_matches_uninterrupted(
    tmp_path, backup_first, earlier_epochs
):
    straight = _run(tmp_path / "a", False, backup_first, earlier_epochs)
    resumed = _run(tmp_path / "b", True, backup_first, earlier_epochs)
    assert int(resumed.optimizer.iterations.numpy()) == int(straight.optimizer.iterations.numpy())
    for a, b in zip(straight.weights, resumed.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    for name in ("d1", "d2"):
        masks = [m.get_layer(name).kernel.constraint.value() for m in (straight, resumed)]
        np.testing.assert_array_equal(*masks)
    assert _zeros(resumed.get_layer("d1").kernel) == pytest.approx(0.7, abs=1 / 512)


@pytest.mark.jax
def test_errors_are_raised_before_anything_changes():
    with pytest.raises(ValueError, match="target_sparsity"):
        GradualPruning(1.0)
    with pytest.raises(ValueError, match="target_sparsity"):
        GradualPruning(-0.2)
    with pytest.raises(ValueError, match="end_step"):
        GradualPruning(0.5, begin_step=10, end_step=10)
    with pytest.raises(ValueError, match="granularity"):
        GradualPruning(0.5, granularity="4:2")
    with pytest.raises(ValueError, match="1 - N/M"):
        GradualPruning(0.8, granularity="2:4")
    with pytest.raises(ValueError, match="frequency"):
        GradualPruning(0.5, frequency=0)
    x, y = _data()
    for kwargs, message in [
        (dict(layers=["nope"]), "no layer named"),
        (dict(layers=keras.layers.Conv2D), "matches no prunable layer"),
        (dict(layers=lambda layer: False), "matches no prunable layer"),
        (dict(criterion="taylor"), "needs gradients"),
    ]:
        model = _mlp()
        before = [keras.ops.convert_to_numpy(w).copy() for w in model.weights]
        with pytest.raises(ValueError, match=message):
            model.fit(
                x, y, epochs=1, verbose=0, callbacks=[GradualPruning(0.5, end_step=10, **kwargs)]
            )
        for old, new in zip(before, model.weights):
            np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(new))
    model = keras.Sequential(
        [
            keras.Input((3,), dtype="int32"),
            keras.layers.Embedding(10, 4),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="needs output channels"):
        model.fit(
            np.zeros((4, 3), "int32"),
            np.zeros((4, 2)),
            verbose=0,
            callbacks=[GradualPruning(0.5, end_step=10, granularity="channel")],
        )
    assert all(w.constraint is None for w in model.weights)


@pytest.mark.jax
def test_taylor_channel_pruning_uses_gradients():
    model = _mlp()
    x, y = _data()
    pruning = GradualPruning(
        0.5,
        schedule="constant",
        granularity="channel",
        criterion="taylor",
        data=(x, y),
        layers="d1",
    )
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[pruning])
    kernel = keras.ops.convert_to_numpy(model.get_layer("d1").kernel)
    assert np.sum(np.all(kernel == 0, axis=0)) == 16
    bias = keras.ops.convert_to_numpy(model.get_layer("d1").bias)
    assert np.all(bias[np.all(kernel == 0, axis=0)] == 0)  # channel pruning masks the bias too


@pytest.mark.jax
@pytest.mark.parametrize(
    "callback",
    [
        GradualPruning(
            0.5,
            1,
            9,
            2,
            granularity="block",
            block_shape=(2, 2),
            scope="global",
            layers=["d1", keras.layers.Dense],
        ),
        GradualPruning(0.5, schedule=tfc.schedules.ConstantSparsity(0.3), criterion="taylor"),
        GradualPruning(None, granularity="2:4"),
        KeepSparsity(layers=["d1"]),
        DynamicSparseTraining(0.8, "uniform", 7, 0.2, end_step=100, seed=3),
    ],
)
def test_callback_configs_round_trip(callback):
    config = keras.saving.serialize_keras_object(callback)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(callback)
    assert restored.get_config() == callback.get_config()


def test_prunable_weights_hook_on_a_custom_layer():
    @keras.saving.register_keras_serializable(package="test_pruning")
    class TwoKernels(keras.layers.Layer):
        def build(self, input_shape):
            self.a = self.add_weight(shape=(input_shape[-1], 8), name="a")
            self.b = self.add_weight(shape=(8, 4), name="b")

        def call(self, x):
            return x @ self.a @ self.b

        def prunable_weights(self):
            return [self.b]  # only b

    model = keras.Sequential([keras.Input((16,)), TwoKernels(name="two")])
    model.compile("adam", "mse")
    x, _ = _data()
    model.fit(
        x,
        np.zeros((64, 4)),
        epochs=1,
        verbose=0,
        callbacks=[GradualPruning(0.5, schedule="constant")],
    )
    layer = model.get_layer("two")
    assert _zeros(layer.b) == 0.5 and _zeros(layer.a) == 0.0


@pytest.mark.jax
def test_dynamic_sparse_training_keeps_sparsity_and_moves_connections():
    model = _mlp()
    x, y = _data()
    rigl = DynamicSparseTraining(
        0.8, "erk", update_frequency=3, drop_fraction=0.5, end_step=20, data=(x, y)
    )
    first = {}

    class Snapshot(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if not first:
                first["mask"] = keras.ops.convert_to_numpy(self.model.get_layer("d1").kernel) != 0

    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[rigl, Snapshot()])
    kernels = [keras.ops.convert_to_numpy(model.get_layer(n).kernel) for n in ("d1", "d2")]
    nonzeros = sum(int(np.count_nonzero(k)) for k in kernels)
    total = sum(k.size for k in kernels)
    assert 1 - nonzeros / total == pytest.approx(0.8, abs=2 / total)
    assert history.history["sparsity"][-1] == pytest.approx(0.8, abs=2 / total)
    moved = np.sum(first["mask"] != (kernels[0] != 0))
    assert moved > 0


def test_prune_at_init_prunes_by_connection_sensitivity_and_keeps_it():
    model = _mlp()
    x, y = _data()
    d1 = model.get_layer("d1")
    keep = tfc.prune_at_init(model, (x, y), 0.9)
    kernels = [keras.ops.convert_to_numpy(model.get_layer(n).kernel) for n in ("d1", "d2")]
    total = sum(k.size for k in kernels)
    assert sum(int((k == 0).sum()) for k in kernels) == round(0.9 * total)
    pattern = keras.ops.convert_to_numpy(d1.kernel) == 0
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[keep])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(d1.kernel) == 0, pattern)
    with pytest.raises(ValueError, match="sparsity"):
        tfc.prune_at_init(model, (x, y), 1.0)


def test_two_pruning_callbacks_leave_no_metrics_wrapper_behind():
    # Callbacks end in order (first installed ends first): each must unlink its own wrapper
    # from wherever it sits in the chain, or evaluate() keeps reporting stale sparsity.
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, name="a"), keras.layers.Dense(4, name="b")]
    )
    model.compile("adam", "mse")
    x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")
    y = np.random.default_rng(1).normal(size=(32, 4)).astype("float32")
    first = GradualPruning(0.5, begin_step=0, end_step=2, frequency=1, layers=["a"])
    second = GradualPruning(0.75, begin_step=0, end_step=2, frequency=1, layers=["b"])
    history = model.fit(x, y, epochs=2, batch_size=8, callbacks=[first, second], verbose=0)
    assert any("sparsity" in key for key in history.history)
    assert "get_metrics_result" not in vars(model)
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert not any("sparsity" in key for key in logs)
    kernels = [model.get_layer(n).kernel.numpy() for n in ("a", "b")]
    assert [float(np.mean(k == 0)) for k in kernels] == [0.5, 0.75]
