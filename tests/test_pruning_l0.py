"""L0 hard-concrete gates under a MACs constraint: gate math, exact folding, MACs, the constraint."""

import math

import keras
import numpy as np
import pytest
from crash import CrashAt

import tfcompress as tfc
from tfcompress.pruning.l0_graph import GateCosts, find_gates

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
L = keras.layers


def _cnn(name="cnn"):
    """The three fold kinds: conv+ReLU (producer), conv+BN (bn), Dense+GELU (consumers)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    h = L.MaxPooling2D(name="pool")(h)
    h = L.Conv2D(16, 3, padding="same", name="c2")(h)
    h = L.BatchNormalization(name="bn2")(h)
    h = L.ReLU(name="relu2")(h)
    h = L.Flatten(name="flat")(h)
    h = L.Dense(24, activation="gelu", name="d1")(h)
    outputs = L.Dense(10, name="out")(h)
    model = keras.Model(inputs, outputs, name=name)
    rng = np.random.default_rng(1)
    norm = model.get_layer("bn2")
    for variable, value in (
        (norm.gamma, rng.uniform(0.5, 1.5, 16)),
        (norm.beta, rng.normal(0, 0.3, 16)),
        (norm.moving_mean, rng.normal(0, 0.3, 16)),
        (norm.moving_variance, rng.uniform(0.5, 2.0, 16)),
    ):
        variable.assign(value.astype("float32"))
    for name in ("c1", "c2", "d1"):
        layer = model.get_layer(name)
        layer.bias.assign(rng.normal(0, 0.2, layer.bias.shape).astype("float32"))
    return model


def _set_log_alpha(gate, values):
    gate.gate_logit.assign((np.asarray(values) / gate.rate).astype("float32"))


def _x(n=32):
    return np.random.default_rng(2).normal(size=(n, 8, 8, 1)).astype("float32")


@pytest.mark.jax
def test_gate_probabilities_and_inference_values_follow_the_hard_concrete_formulas():
    gate = tfc.pruning.HardConcreteGate(seed=3, rate=10.0)
    gate.build((None, 4))
    log_alpha = np.array([-3.0, -0.5, 1.0, 3.0])
    _set_log_alpha(gate, log_alpha)
    beta, gamma, zeta = 2 / 3, -0.1, 1.1
    expected_open = 1 / (1 + np.exp(-(log_alpha - beta * math.log(-gamma / zeta))))
    np.testing.assert_allclose(gate.open_probability(), expected_open, rtol=1e-5)
    s = 1 / (1 + np.exp(-log_alpha))
    expected_z = np.clip(s * (zeta - gamma) + gamma, 0, 1)
    np.testing.assert_allclose(gate.deterministic_gates(), expected_z, rtol=1e-5)
    ones = np.ones((1, 4), "float32")
    np.testing.assert_allclose(np.asarray(gate(ones)), expected_z[None], rtol=1e-5)
    # training draws: the fraction of non-zero gates is P(z != 0); z stays in [0, 1]
    draws = np.stack([np.asarray(gate(ones, training=True))[0] for _ in range(2000)])
    assert draws.min() >= 0 and draws.max() <= 1
    np.testing.assert_allclose((draws > 0).mean(0), expected_open, atol=0.04)
    # the gate's loss in training: cost_weight * mean open probability
    gate.cost_weight.assign(2.0)
    _ = gate(ones, training=True)
    assert float(np.asarray(gate.losses[-1])) == pytest.approx(2 * expected_open.mean(), rel=1e-5)


def test_add_gates_places_them_where_they_fold_and_leaves_the_model_alone():
    model = _cnn()
    before = [w.copy() for w in model.get_weights()]
    gated = tfc.pruning.add_l0_gates(model)
    names = [layer.name for layer in gated.layers]
    assert names.index("c1_l0_gate") == names.index("c1") + 1
    assert names.index("c2_l0_gate") == names.index("bn2") + 1  # after the BatchNorm
    assert names.index("d1_l0_gate") == names.index("d1") + 1
    # open gates at inference: the same function as the model
    x = _x()
    np.testing.assert_allclose(gated.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert all(v.constraint is None for v in model.weights)


@pytest.mark.jax
def test_removing_gates_folds_them_exactly_and_shrink_reaches_the_reported_macs():
    model = _cnn()
    gated = tfc.pruning.add_l0_gates(model)
    rng = np.random.default_rng(4)
    for gate in find_gates(gated):
        channels = gate.gate_logit.shape[0]
        # a third off (z = 0), a third partly open (0 < z < 1), a third fully open
        values = rng.choice([-4.0, 0.5, 4.0], size=channels)
        values[0] = 4.0
        _set_log_alpha(gate, values)
    x = _x()
    expected = gated.predict(x, verbose=0)
    pruned, report = tfc.pruning.remove_l0_gates(gated)
    assert not any(isinstance(layer, tfc.pruning.HardConcreteGate) for layer in pruned.layers)
    assert [layer.name for layer in pruned.layers] == [layer.name for layer in model.layers]
    np.testing.assert_allclose(pruned.predict(x, verbose=0), expected, atol=1e-4)
    small = tfc.shrink_model(pruned)
    np.testing.assert_allclose(small.predict(x, verbose=0), expected, atol=1e-4)
    for name, (kept, total) in report.kept.items():
        assert small.get_layer(name).kernel.shape[-1] == kept < total
    dense_macs = tfc.summary(model, print_fn=None).total_macs
    assert tfc.summary(small, print_fn=None).total_macs / dense_macs == pytest.approx(
        report.macs_fraction
    )
    assert report.rounded_channels == 0 and report.gates_macs_fraction == report.macs_fraction
    # masks keep the removed channels at zero through further training
    pruned.compile(keras.optimizers.Adam(1e-2), LOSS)
    pruned.fit(x, np.arange(32) % 10, epochs=2, verbose=0)
    c2 = np.asarray(pruned.get_layer("c2").kernel)
    assert (np.abs(c2).sum(axis=(0, 1, 2)) == 0).sum() == 16 - report.kept["c2"][0]


def test_gate_costs_are_multilinear_in_the_kept_fractions():
    model = _cnn()
    gated = tfc.pruning.add_l0_gates(model)
    costs = GateCosts(gated, find_gates(gated))
    dense = tfc.summary(model, print_fn=None).total_macs
    assert costs.dense == dense and costs.fraction(np.ones(3)) == pytest.approx(1.0)
    kept = np.array([0.5, 0.25, 0.75])
    # c1: 8*8*9*1*8 scaled by f1; c2: 4*4*9*8*16 by f1*f2; d1: 256*24 by f2*f3; out: 24*10 by f3
    macs = {"c1": 8 * 8 * 9 * 8, "c2": 4 * 4 * 9 * 8 * 16, "d1": 256 * 24, "out": 240}
    expected = (
        macs["c1"] * 0.5 + macs["c2"] * 0.5 * 0.25 + macs["d1"] * 0.25 * 0.75 + macs["out"] * 0.75
    )
    assert costs.fraction(kept) == pytest.approx(expected / dense)
    step = 1e-6
    numeric = [
        (costs.fraction(kept + step * np.eye(3)[g]) - costs.fraction(kept)) / step for g in range(3)
    ]
    np.testing.assert_allclose(costs.gradient(kept), numeric, rtol=1e-4)


@pytest.mark.jax
def test_constraint_drives_the_gates_to_the_macs_target_and_rounding_lands_within_two_percent(
    tmp_path,
):
    x, y = _digits_data()
    model = _cnn("digits")
    model.compile(keras.optimizers.Adam(3e-3), LOSS)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    gated = tfc.pruning.add_l0_gates(model)
    gated.compile(keras.optimizers.Adam(1e-3), LOSS)
    constraint = tfc.callbacks.L0MacsConstraint(0.5)
    history = gated.fit(x, y, epochs=4, batch_size=32, verbose=0, callbacks=[constraint])
    expected = history.history["l0_macs_fraction"]
    assert expected[0] > expected[-1] and abs(expected[-1] - 0.5) < 0.05
    assert history.history["l0_multiplier"][-1] >= 0
    pruned, report = tfc.pruning.remove_l0_gates(gated, target_macs=0.5)
    assert 0.49 <= report.macs_fraction <= 0.5
    small = tfc.shrink_model(pruned)
    ratio = (
        tfc.summary(small, print_fn=None).total_macs / tfc.summary(model, print_fn=None).total_macs
    )
    assert ratio == pytest.approx(report.macs_fraction)
    # saved and loaded with the gates: the same model, the constraint's state included
    gated.save(tmp_path / "gated.keras")
    again = keras.saving.load_model(tmp_path / "gated.keras")
    np.testing.assert_allclose(again.predict(x[:16], verbose=0), gated.predict(x[:16], verbose=0))
    gate = find_gates(again)[0]
    assert float(np.asarray(gate.multiplier)) == pytest.approx(constraint.integral)
    assert float(np.asarray(gate.constraint_step)) == constraint.step > 0


def _digits_data():
    data = tfc.datasets.load_digits()
    x = np.asarray(data.x_train, "float32")[:512].reshape(-1, 8, 8, 1)
    y = np.asarray(data.y_train)[:512]
    return x, y


def test_bad_targets_and_unprunable_models_are_refused_before_anything_changes():
    for bad in (0, 0.0, 1.5, -0.2, True, "half"):
        with pytest.raises(ValueError, match="target_macs"):
            tfc.callbacks.L0MacsConstraint(bad)
    with pytest.raises(ValueError, match="ramp"):
        tfc.callbacks.L0MacsConstraint(0.5, ramp=2)
    with pytest.raises(ValueError, match="gate_step"):
        tfc.callbacks.L0MacsConstraint(0.5, gate_step=0)
    model = _cnn()
    gated = tfc.pruning.add_l0_gates(model)
    for bad in (0, 1.01):
        with pytest.raises(ValueError, match="target_macs"):
            tfc.pruning.remove_l0_gates(gated, target_macs=bad)
    with pytest.raises(ValueError, match="keeps a single channel"):
        tfc.pruning.remove_l0_gates(gated, target_macs=0.001)
    with pytest.raises(ValueError, match="no HardConcreteGate"):
        tfc.pruning.remove_l0_gates(model)
    # nothing prunable as groups: every channel reaches the output
    flat = keras.Sequential([keras.Input((4,)), L.Dense(3, name="only")])
    with pytest.raises(ValueError, match="no Dense/Conv layer whose output channels"):
        tfc.pruning.add_l0_gates(flat)
    with pytest.raises(ValueError, match="'out'"):
        tfc.pruning.add_l0_gates(model, layers=["out"])
    with pytest.raises(ValueError, match="stretch"):
        tfc.pruning.HardConcreteGate(stretch=(0.1, 1.1))
    with pytest.raises(ValueError, match="temperature"):
        tfc.pruning.add_l0_gates(model, temperature=0)
    # the callback refuses a model without gates when fit starts, before a step runs
    model.compile("adam", LOSS)
    weights = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match="no HardConcreteGate"):
        model.fit(
            _x(), np.zeros(32), epochs=1, verbose=0, callbacks=[tfc.callbacks.L0MacsConstraint(0.5)]
        )
    for old, new in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    with pytest.raises(ValueError, match="keeps a single channel"):
        gated.compile("adam", LOSS)
        gated.fit(
            _x(),
            np.zeros(32),
            epochs=1,
            verbose=0,
            callbacks=[tfc.callbacks.L0MacsConstraint(0.001)],
        )


def _transformer_block():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 16))
    attended = L.MultiHeadAttention(4, 8, name="attn")(inputs, inputs, use_causal_mask=True)
    x = L.LayerNormalization(name="norm")(L.Add()([inputs, attended]))
    ffn = L.Dense(32, activation="gelu", name="ffn_in")(x)
    x = L.Add()([x, L.Dense(16, name="ffn_out")(ffn)])
    outputs = L.Dense(10, name="logits")(L.GlobalAveragePooling1D()(x))
    model = keras.Model(inputs, outputs, name="block")
    rng = np.random.default_rng(1)
    for variable in model.get_layer("attn").weights:
        if "bias" in variable.path:
            variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32"))
    return model


@pytest.mark.jax
def test_head_gates_silence_whole_heads_and_shrink_removes_them(tmp_path):
    model = _transformer_block()
    gated = tfc.pruning.add_l0_gates(model)
    assert type(gated.get_layer("attn")).__name__ == "GatedMultiHeadAttention"
    gates = find_gates(gated)
    assert [int(g.gate_logit.shape[0]) for g in gates] == [4, 32]  # heads, FFN neurons
    x = np.random.default_rng(2).normal(size=(16, 8, 16)).astype("float32")
    np.testing.assert_allclose(gated.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    _set_log_alpha(gates[0], [4.0, -4.0, 0.5, -4.0])  # heads 1 and 3 off, head 2 at z < 1
    _set_log_alpha(gates[1], np.where(np.arange(32) % 3 == 0, -4.0, 4.0))
    expected = gated.predict(x, verbose=0)
    gated.save(tmp_path / "gated.keras")
    again = keras.saving.load_model(tmp_path / "gated.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), expected, atol=1e-6)
    pruned, report = tfc.pruning.remove_l0_gates(gated)
    assert type(pruned.get_layer("attn")) is keras.layers.MultiHeadAttention
    assert report.kept == {"attn": (2, 4), "ffn_in": (21, 32)}
    np.testing.assert_allclose(pruned.predict(x, verbose=0), expected, atol=1e-5)
    small = tfc.shrink_model(pruned)
    assert small.get_layer("attn").num_heads == 2 and small.get_layer("ffn_in").units == 21
    np.testing.assert_allclose(small.predict(x, verbose=0), expected, atol=1e-5)
    ratio = (
        tfc.summary(small, print_fn=None).total_macs / tfc.summary(model, print_fn=None).total_macs
    )
    assert ratio == pytest.approx(report.macs_fraction)
    # the attention layer alone (no FFN) can be selected; a Dense reaching a merge cannot
    only_heads = tfc.pruning.add_l0_gates(model, layers=["attn"])
    assert [int(g.gate_logit.shape[0]) for g in find_gates(only_heads)] == [4]
    with pytest.raises(ValueError, match=r"'ffn_out'.*no MultiHeadAttention"):
        tfc.pruning.add_l0_gates(model, layers=["ffn_out"])


def _l0_run(folder, interrupt, backup_first):
    x, y = _digits_data()
    x, y = x[:128], y[:128]

    def gated_model():
        model = tfc.pruning.add_l0_gates(_cnn("resume"), seed=5)
        model.compile(keras.optimizers.Adam(1e-3), LOSS)
        return model

    def callbacks(extra=()):
        backup = keras.callbacks.BackupAndRestore(str(folder / "backup"))
        constraint = tfc.callbacks.L0MacsConstraint(0.5)
        listed = [backup, constraint] if backup_first else [constraint, backup]
        return [*listed, *extra]

    fit = dict(batch_size=32, epochs=5, verbose=0, shuffle=False)
    model = gated_model()
    if interrupt:
        with pytest.raises(KeyboardInterrupt):
            model.fit(x, y, callbacks=callbacks([CrashAt(10)]), **fit)  # mid epoch 3
        model = gated_model()  # a fresh process rebuilds the model
    model.fit(x, y, callbacks=callbacks(), **fit)
    return model


@pytest.mark.parametrize("backup_first", [True, False], ids=["backup-first", "backup-last"])
def test_a_run_resumed_with_backup_and_restore_ends_where_an_uninterrupted_one_does(
    tmp_path, backup_first
):
    straight = _l0_run(tmp_path / "a", False, backup_first)
    resumed = _l0_run(tmp_path / "b", True, backup_first)
    for a, b in zip(straight.weights, resumed.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    gate = find_gates(resumed)[0]
    assert float(np.asarray(gate.constraint_step)) == 20


def test_batchnorm_statistics_are_re_estimated_on_the_plain_model():
    model = _cnn()
    gated = tfc.pruning.add_l0_gates(model)
    _set_log_alpha(find_gates(gated)[0], np.where(np.arange(8) % 2 == 0, -4.0, 0.5))
    x = _x(128)
    with pytest.raises(ValueError, match="batchnorm_data"):
        tfc.pruning.remove_l0_gates(gated, batchnorm_data=np.zeros((4, 5, 5, 1), "float32"))
    plain, _ = tfc.pruning.remove_l0_gates(gated, batchnorm_data=x)
    # bn2 reads c2, which reads c1's gated channels: its statistics are now those of the
    # plain model's c2 outputs (the mean over batches of 64 of each batch's mean)
    c2 = keras.Model(plain.input, plain.get_layer("c2").output)
    means = [np.asarray(c2(x[i : i + 64])).mean(axis=(0, 1, 2)) for i in (0, 64)]
    norm = plain.get_layer("bn2")
    np.testing.assert_allclose(np.asarray(norm.moving_mean), np.mean(means, 0), atol=1e-5)
    assert norm.momentum == pytest.approx(0.99)  # put back
    untouched, _ = tfc.pruning.remove_l0_gates(gated)
    np.testing.assert_array_equal(
        np.asarray(untouched.get_layer("bn2").moving_mean),
        np.asarray(model.get_layer("bn2").moving_mean),
    )
