"""DistillationTeacher and the distillation loss math: numbers against NumPy references."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.callbacks import DistillationTeacher
from tfcompress.distillation.losses import blend_losses, hint_loss, soft_target_loss

N = 64  # samples used by the training tests (two batches of 32)


# ---------------------------------------------------------------- references


def np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_soft_target(t, s, temperature, w=None):
    lt, ls = np_log_softmax(t / temperature), np_log_softmax(s / temperature)
    kl = (np.exp(lt) * (lt - ls)).sum(-1)
    w = np.ones(len(kl)) if w is None else w
    return temperature**2 * (kl * w).sum() / len(kl)


def np_ce(logits, y):
    return float(-np_log_softmax(logits)[np.arange(len(y)), y].mean())


# ---------------------------------------------------------------- models


def teacher_cnn():
    """A teacher of a different architecture from every student below."""
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="t_conv")(inputs)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(16, activation="relu", name="t_hidden")(h)
    return keras.Model(inputs, keras.layers.Dense(10, name="t_logits")(h), name="teacher")


def sequential_student():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu", name="s_hidden"),
            keras.layers.Dense(10, name="s_logits"),
        ],
        name="seq_student",
    )


def functional_student():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(16, activation="relu", name="s_hidden")(h)
    return keras.Model(inputs, keras.layers.Dense(10, name="s_logits")(h), name="fn_student")


class SubclassedStudent(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.flatten = keras.layers.Flatten()
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.out = keras.layers.Dense(10)

    def call(self, x):
        return self.out(self.hidden(self.flatten(x)))


STUDENTS = {
    "sequential": sequential_student,
    "functional": functional_student,
    "subclassed": SubclassedStudent,
}


def compiled(model, lr=0.0):
    model.compile(
        optimizer=keras.optimizers.SGD(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


@pytest.fixture(scope="module")
def batch(digits):
    return digits.x_train[:N], digits.y_train[:N]


# ---------------------------------------------------------------- loss math


@pytest.mark.jax
@pytest.mark.parametrize("temperature", [1.0, 2.5, 8.0])
def test_soft_target_matches_numpy(temperature):
    rng = np.random.default_rng(0)
    t, s = rng.normal(0, 3, (16, 10)), rng.normal(0, 3, (16, 10))
    w = rng.uniform(0, 2, 16)
    got = float(soft_target_loss(t.astype("float32"), s.astype("float32"), temperature))
    np.testing.assert_allclose(got, np_soft_target(t, s, temperature), rtol=1e-5)
    got_w = float(soft_target_loss(t.astype("float32"), s.astype("float32"), temperature, w))
    np.testing.assert_allclose(got_w, np_soft_target(t, s, temperature, w), rtol=1e-5)


def test_soft_target_gradient_matches_numpy():
    import tensorflow as tf

    rng = np.random.default_rng(1)
    t = rng.normal(0, 2, (8, 5)).astype("float32")
    s = tf.Variable(rng.normal(0, 2, (8, 5)).astype("float32"))
    temperature = 3.0
    with tf.GradientTape() as tape:
        loss = soft_target_loss(t, s, temperature)
    grad = tape.gradient(loss, s).numpy()
    # d/ds [T^2 KL(p_t || p_s)] = T * (softmax(s/T) - softmax(t/T)) / batch
    expected = (
        temperature
        * (
            np.exp(np_log_softmax(s.numpy() / temperature))
            - np.exp(np_log_softmax(t / temperature))
        )
        / len(t)
    )
    np.testing.assert_allclose(grad, expected, atol=1e-6)


@pytest.mark.jax
def test_soft_target_agrees_with_keras_logits_distillation():
    rng = np.random.default_rng(2)
    t, s = (
        rng.normal(0, 2, (16, 10)).astype("float32"),
        rng.normal(0, 2, (16, 10)).astype("float32"),
    )
    # Keras 3.15's default loss="kl_divergence" resolves to a function, not a KLDivergence
    # instance, so LogitsDistillation then skips its softmax and T^2 (a Keras bug); the
    # instance form is the one that computes Hinton's loss.
    keras_loss = keras.distillation.LogitsDistillation(4.0, loss=keras.losses.KLDivergence())
    np.testing.assert_allclose(
        float(soft_target_loss(t, s, 4.0)), float(keras_loss.compute_loss(t, s)), rtol=1e-4
    )


@pytest.mark.jax
def test_hint_loss_and_blend_match_numpy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(4, 3, 2)), rng.normal(size=(4, 3, 2))
    np.testing.assert_allclose(float(hint_loss(a, b)), ((a - b) ** 2).mean(), rtol=1e-5)
    np.testing.assert_allclose(float(blend_losses(2.0, 6.0, 0.25)), 3.0)
    with pytest.raises(ValueError, match="alpha"):
        blend_losses(1.0, 1.0, 1.5)
    with pytest.raises(ValueError, match="temperature"):
        soft_target_loss(a[..., 0], b[..., 0], 0.0)
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(3, 5\)|\(3, 5\).*\(3, 2\)"):
        hint_loss(a, rng.normal(size=(4, 3, 5)))


# ---------------------------------------------------------------- the callback


def _one_step_loss(student, teacher, x, y, **kwargs):
    """Training loss of one full batch with lr=0 (weights unchanged) and its reference."""
    compiled(student)
    student(x[:1])
    hist = student.fit(
        x,
        y,
        batch_size=len(x),
        epochs=1,
        verbose=0,
        callbacks=[DistillationTeacher(teacher, **kwargs)],
    )
    return hist.history["loss"][0]


@pytest.mark.parametrize("kind", list(STUDENTS))
def test_student_kinds(kind, batch, digits):
    """Loss term = reference, validation/evaluate/metrics untouched, removed after fit."""
    x, y = batch
    val = (digits.x_test[:64], digits.y_test[:64])
    keras.utils.set_random_seed(5)
    teacher = teacher_cnn()
    student, plain = compiled(STUDENTS[kind]()), compiled(STUDENTS[kind]())
    student(x[:1])
    plain(x[:1])
    plain.set_weights(student.get_weights())
    kw = dict(batch_size=32, epochs=1, verbose=0, validation_data=val)
    # lr = 0: the weights stay put, so the numbers can be checked exactly.
    h_teacher = student.fit(x, y, callbacks=[DistillationTeacher(teacher, 3.0, 0.7)], **kw)
    h_plain = plain.fit(x, y, **kw)
    s_logits = keras.ops.convert_to_numpy(student(x))
    t_logits = keras.ops.convert_to_numpy(teacher(x))
    expected = 0.3 * np_ce(s_logits, y) + 0.7 * np_soft_target(t_logits, s_logits, 3.0)
    np.testing.assert_allclose(h_teacher.history["loss"][0], expected, rtol=1e-5)
    for key in ("val_loss", "val_accuracy", "accuracy"):
        np.testing.assert_allclose(h_teacher.history[key], h_plain.history[key], rtol=1e-6)
    np.testing.assert_allclose(
        student.evaluate(*val, verbose=0), plain.evaluate(*val, verbose=0), rtol=1e-6
    )
    val_ce = np_ce(keras.ops.convert_to_numpy(student(val[0])), val[1])
    np.testing.assert_allclose(student.evaluate(*val, verbose=0)[0], val_ce, rtol=1e-5)
    assert "compute_loss" not in student.__dict__ and student.train_function is None

    # With a learning rate, the teacher's gradient changes what the student learns.
    student.optimizer.learning_rate = 0.1
    plain.optimizer.learning_rate = 0.1
    student.fit(
        x, y, batch_size=32, epochs=1, verbose=0, callbacks=[DistillationTeacher(teacher, 4.0, 0.5)]
    )
    plain.fit(x, y, batch_size=32, epochs=1, verbose=0)
    diff = max(np.abs(a - b).max() for a, b in zip(student.get_weights(), plain.get_weights()))
    assert diff > 1e-4
    # A later fit without the callback trains on the plain loss again.
    student.optimizer.learning_rate = 0.0
    logits = keras.ops.convert_to_numpy(student(x))
    loss = student.fit(x, y, batch_size=len(x), epochs=1, verbose=0).history["loss"][0]
    np.testing.assert_allclose(loss, np_ce(logits, y), rtol=1e-5)


def test_teacher_gets_no_gradient_and_runs_in_inference_mode(batch):
    x, y = batch
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Dropout(0.9)(keras.layers.Flatten()(inputs))
    teacher = keras.Model(inputs, keras.layers.Dense(10)(h))
    before = [w.copy() for w in teacher.get_weights()]
    student = sequential_student()
    # Dropout in inference mode is the identity, so the term is deterministic.
    got = _one_step_loss(student, teacher, x, y, temperature=2.0, alpha=1.0)
    t = keras.ops.convert_to_numpy(teacher(x, training=False))
    s = keras.ops.convert_to_numpy(student(x))
    np.testing.assert_allclose(got, np_soft_target(t, s, 2.0), rtol=1e-5)
    for w0, w1 in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(w0, w1)


@pytest.mark.jax
def test_hint_term_matches_reference(batch):
    x, y = batch
    teacher, student = teacher_cnn(), functional_student()
    got = _one_step_loss(
        student,
        teacher,
        x,
        y,
        temperature=2.0,
        alpha=0.5,
        hints={"s_hidden": "t_hidden"},
        hint_weight=0.3,
    )
    t_feat = keras.Model(teacher.inputs[0], teacher.get_layer("t_hidden").output)(x)
    s_feat = keras.Model(student.inputs[0], student.get_layer("s_hidden").output)(x)
    s, t = keras.ops.convert_to_numpy(student(x)), keras.ops.convert_to_numpy(teacher(x))
    hint = np.mean((keras.ops.convert_to_numpy(t_feat) - keras.ops.convert_to_numpy(s_feat)) ** 2)
    expected = 0.5 * np_ce(s, y) + 0.5 * (np_soft_target(t, s, 2.0) + 0.3 * hint)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_reuses_keras_distillation_losses(batch):
    x, y = batch
    teacher, student = teacher_cnn(), sequential_student()
    losses = [
        keras.distillation.LogitsDistillation(2.0, loss=keras.losses.KLDivergence()),
        keras.distillation.FeatureDistillation("mse", "t_hidden", "s_hidden"),
    ]
    got = _one_step_loss(student, teacher, x, y, alpha=0.4, losses=losses, loss_weights=[1.0, 2.0])
    s, t = keras.ops.convert_to_numpy(student(x)), keras.ops.convert_to_numpy(teacher(x))
    t_feat = keras.Model(teacher.inputs[0], teacher.get_layer("t_hidden").output)(x)
    s_feat = keras.Model(student.inputs[0], student.get_layer("s_hidden").output)(x)
    feat = np.mean((keras.ops.convert_to_numpy(t_feat) - keras.ops.convert_to_numpy(s_feat)) ** 2)
    expected = 0.6 * np_ce(s, y) + 0.4 * (np_soft_target(t, s, 2.0) + 2.0 * feat)
    np.testing.assert_allclose(got, expected, rtol=1e-4)


@pytest.mark.jax
def test_alpha_and_temperature_follow_schedules(batch):
    x, y = batch
    x, y = x[:32], y[:32]
    teacher, student = teacher_cnn(), compiled(sequential_student())
    student(x[:1])
    alpha = keras.optimizers.schedules.PiecewiseConstantDecay([0], [0.0, 1.0])  # 0 at step 0
    temperature = keras.optimizers.schedules.PiecewiseConstantDecay([1], [1.0, 5.0])
    hist = student.fit(
        x,
        y,
        batch_size=32,
        epochs=3,
        verbose=0,
        callbacks=[DistillationTeacher(teacher, temperature, alpha)],
    )
    s, t = keras.ops.convert_to_numpy(student(x)), keras.ops.convert_to_numpy(teacher(x))
    expected = [np_ce(s, y), np_soft_target(t, s, 1.0), np_soft_target(t, s, 5.0)]
    np.testing.assert_allclose(hist.history["loss"], expected, rtol=1e-5)


def test_saved_student_loads_without_tfcompress(batch, tmp_path):
    x, y = batch
    student = compiled(functional_student(), lr=0.05)
    student.fit(x, y, epochs=1, verbose=0, callbacks=[DistillationTeacher(teacher_cnn())])
    path = tmp_path / "student.keras"
    student.save(path)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import os, sys
        os.environ["KERAS_BACKEND"] = "tensorflow"
        import keras, numpy as np
        model = keras.saving.load_model({str(path)!r}, safe_mode=True)
        np.save({str(tmp_path / "pred.npy")!r}, model.predict(np.load({str(tmp_path / "x.npy")!r}), verbose=0))
        assert not any(m.startswith("tfcompress") for m in sys.modules), "tfcompress imported"
    """)
    subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    np.testing.assert_allclose(
        np.load(tmp_path / "pred.npy"), keras.ops.convert_to_numpy(student(x)), atol=1e-6
    )


def test_config_round_trip():
    teacher = teacher_cnn()
    cb = DistillationTeacher(
        teacher,
        temperature=tfc.schedules.WarmupCosine(4.0, decay_steps=10),
        alpha=0.3,
        losses=[keras.distillation.LogitsDistillation(temperature=2.0)],
        loss_weights=[0.5],
        hints=[("s_hidden", "t_hidden")],
        hint_weight=0.2,
    )
    config = cb.get_config()
    clone = DistillationTeacher.from_config(config)

    def without_teacher(c):
        return {k: v for k, v in c.items() if k != "teacher"}

    assert without_teacher(clone.get_config()) == without_teacher(config)
    assert clone.teacher.count_params() == teacher.count_params()
    assert isinstance(clone.temperature, tfc.schedules.WarmupCosine)
    assert [layer.name for layer in clone.teacher.layers] == [la.name for la in teacher.layers]
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(cb))
    assert without_teacher(restored.get_config()) == without_teacher(config)


# ---------------------------------------------------------------- errors


@pytest.mark.jax
def test_bad_arguments_raise_clear_errors():
    teacher = teacher_cnn()
    with pytest.raises(ValueError, match=r"`temperature` must be > 0.*-1"):
        DistillationTeacher(teacher, temperature=-1.0)
    with pytest.raises(ValueError, match=r"`temperature` must be > 0.*got 0"):
        DistillationTeacher(teacher, temperature=0)
    with pytest.raises(ValueError, match=r"`alpha` must be in \[0, 1\].*1.5"):
        DistillationTeacher(teacher, alpha=1.5)
    with pytest.raises(ValueError, match=r"`alpha` must be in \[0, 1\].*-0.1"):
        DistillationTeacher(teacher, alpha=-0.1)
    with pytest.raises(ValueError, match=r"teacher 'teacher' has no layer named 'nope'"):
        DistillationTeacher(teacher, hints={"s_hidden": "nope"})
    with pytest.raises(ValueError, match=r"keras\.Model"):
        DistillationTeacher("teacher")
    with pytest.raises(ValueError, match="DistillationLoss"):
        DistillationTeacher(teacher, losses=["kl_divergence"])


def _assert_untouched_after_error(student, x, y, callback, match):
    weights = [w.copy() for w in student.get_weights()]
    with pytest.raises(ValueError, match=match):
        student.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    assert "compute_loss" not in student.__dict__
    for w0, w1 in zip(weights, student.get_weights()):
        np.testing.assert_array_equal(w0, w1)
    # The student still trains normally afterwards.
    student.fit(x, y, epochs=1, verbose=0)


def test_student_hint_layer_missing_raises_before_change(batch):
    x, y = batch
    student = compiled(functional_student())
    _assert_untouched_after_error(
        student,
        x,
        y,
        DistillationTeacher(teacher_cnn(), hints={"missing": "t_hidden"}),
        r"student 'fn_student' has no layer named 'missing'",
    )


@pytest.mark.parametrize("kind", ["functional", "subclassed"])
def test_output_shape_mismatch_raises(kind, batch):
    x, y = batch
    inputs = keras.Input((8, 8, 1))
    teacher = keras.Model(inputs, keras.layers.Dense(7)(keras.layers.Flatten()(inputs)))
    student = compiled(STUDENTS[kind]())
    student(x[:1])
    _assert_untouched_after_error(
        student,
        x,
        y,
        DistillationTeacher(teacher),
        r"teacher's output shape \[\(7,\)\] differs.*\[\(10,\)\]",
    )


def test_schedule_leaving_its_range_raises(batch):
    x, y = batch
    student = compiled(sequential_student())
    alpha = keras.optimizers.schedules.PiecewiseConstantDecay([1], [0.5, 2.0])
    _assert_untouched_after_error(
        student,
        x,
        y,
        DistillationTeacher(teacher_cnn(), alpha=alpha),
        r"`alpha` schedule gives 2.0 at step",
    )


# ---------------------------------------------------------------- composition


class _Int4Dense(keras.layers.Layer):
    """A minimal QAT layer on tfcompress's quantizer protocol (QuantDense is not on main yet)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.quantizer = tfc.quantizers.get("int4_lsq")

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")
        self.state = self.quantizer.build(self, tuple(self.kernel.shape), name="kernel")
        self.quantizer.initialize(self.state, self.kernel)

    def call(self, x, training=None):
        return x @ self.quantizer(self.kernel, self.state, training=training)


def test_composes_with_tfcompress_quantizer_layers(batch):
    x, y = batch
    student = compiled(
        keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), _Int4Dense(10, name="q")])
    )
    teacher = teacher_cnn()
    got = _one_step_loss(student, teacher, x, y, temperature=2.0, alpha=0.5)
    s = keras.ops.convert_to_numpy(student(x, training=False))
    t = keras.ops.convert_to_numpy(teacher(x))
    np.testing.assert_allclose(got, 0.5 * np_ce(s, y) + 0.5 * np_soft_target(t, s, 2.0), rtol=1e-5)
    assert (
        len(
            np.unique(
                keras.ops.convert_to_numpy(
                    student.get_layer("q").quantizer(
                        student.get_layer("q").kernel, student.get_layer("q").state
                    )
                )
            )
        )
        <= 16
    )
    student.optimizer.learning_rate = 0.05
    trainable = student.trainable_weights
    assert len(trainable) >= 2  # the kernel and the learned LSQ step
    before = [keras.ops.convert_to_numpy(w).copy() for w in trainable]
    student.fit(
        x, y, batch_size=32, epochs=1, verbose=0, callbacks=[DistillationTeacher(teacher, 2.0, 0.5)]
    )
    after = [keras.ops.convert_to_numpy(w) for w in trainable]
    assert all(np.abs(a - b).max() > 0 for a, b in zip(before, after))


@pytest.mark.jax
def test_composes_with_gradual_pruning_and_lr_rewinding(batch):
    x, y = batch
    keras.utils.set_random_seed(3)
    student = compiled(functional_student(), lr=0.05)
    pruning = tfc.callbacks.GradualPruning(0.8, begin_step=0, end_step=4, frequency=2)
    rewind = tfc.callbacks.LearningRateRewinding(
        tfc.schedules.WarmupCosine(0.05, decay_steps=2, warmup_steps=1), pruning=pruning
    )
    hist = student.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        verbose=0,
        callbacks=[pruning, DistillationTeacher(teacher_cnn(), 2.0, 0.5), rewind],
    )
    assert rewind.restarts == (2, 4)
    for name in ("s_hidden", "s_logits"):
        kernel = keras.ops.convert_to_numpy(student.get_layer(name).kernel)
        assert abs(np.mean(kernel == 0) - 0.8) < 0.02, name
    assert np.isfinite(hist.history["loss"]).all()
    assert "compute_loss" not in student.__dict__


def test_teacher_term_reaches_the_gradients(batch):
    """One SGD step with the callback equals a hand-written GradientTape step on the blend."""
    import tensorflow as tf

    x, y = batch
    keras.utils.set_random_seed(7)
    teacher = teacher_cnn()
    student = compiled(sequential_student(), lr=0.5)
    student(x[:1])
    start = [w.copy() for w in student.get_weights()]
    temperature, alpha, lr = 4.0, 0.7, 0.5
    t = tf.constant(keras.ops.convert_to_numpy(teacher(x, training=False)))
    variables = [tf.Variable(w) for w in start]

    def forward(v, inputs):  # the student's Flatten -> Dense(relu) -> Dense
        h = tf.nn.relu(tf.reshape(inputs, (len(inputs), -1)) @ v[0] + v[1])
        return h @ v[2] + v[3]

    with tf.GradientTape() as tape:
        s = forward(variables, tf.constant(x))
        ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, s))
        p_t = tf.nn.softmax(t / temperature)
        kl = tf.reduce_sum(
            p_t * (tf.nn.log_softmax(t / temperature) - tf.nn.log_softmax(s / temperature)), -1
        )
        loss = (1 - alpha) * ce + alpha * temperature**2 * tf.reduce_mean(kl)
    grads = tape.gradient(loss, variables)
    expected = [v.numpy() - lr * g.numpy() for v, g in zip(variables, grads)]
    student.fit(
        x,
        y,
        batch_size=len(x),
        epochs=1,
        verbose=0,
        shuffle=False,
        callbacks=[DistillationTeacher(teacher, temperature, alpha)],
    )
    for got, want, w0 in zip(student.get_weights(), expected, start):
        assert np.abs(want - w0).max() > 1e-3  # a real step, not a no-op
        np.testing.assert_allclose(got, want, atol=1e-5)
    # The teacher's term moved the weights: the CE-only step lands elsewhere.
    plain = compiled(sequential_student(), lr=lr)
    plain(x[:1])
    plain.set_weights(start)
    plain.fit(x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False)
    gap = max(np.abs(a - b).max() for a, b in zip(plain.get_weights(), student.get_weights()))
    assert gap > 1e-3


def test_composes_with_quantize_model_student(batch, digits):
    """A tfc.quantize_model (QAT layers) student trains with the teacher in the same fit."""
    x, y = batch
    keras.utils.set_random_seed(11)
    teacher = teacher_cnn()
    float_student = functional_student()
    float_student(x[:1])
    qat = compiled(tfc.quantize_model(float_student, "int4"))
    twin = compiled(tfc.quantize_model(float_student, "int4"))
    assert any("Quant" in type(layer).__name__ for layer in qat.layers)
    # lr = 0 and alpha = 1: the training loss is exactly the teacher's term on the student's
    # training-mode (fake-quantized) logits; the twin gives the same logits without the callback.
    s_train = keras.ops.convert_to_numpy(twin(x, training=True))
    t = keras.ops.convert_to_numpy(teacher(x, training=False))
    loss = qat.fit(
        x,
        y,
        batch_size=len(x),
        epochs=1,
        verbose=0,
        callbacks=[DistillationTeacher(teacher, 2.0, 1.0)],
    ).history["loss"][0]
    np.testing.assert_allclose(loss, np_soft_target(t, s_train, 2.0), rtol=1e-4)
    assert abs(loss - np_ce(s_train, y)) > 1e-2
    # evaluate: the student's own loss only.
    val_x, val_y = digits.x_test[:64], digits.y_test[:64]
    s_val = keras.ops.convert_to_numpy(qat(val_x, training=False))
    np.testing.assert_allclose(qat.evaluate(val_x, val_y, verbose=0)[0], np_ce(s_val, val_y), 1e-5)
    # With a learning rate the blended loss goes down over a few epochs.
    qat.optimizer.learning_rate = 0.1
    hist = qat.fit(
        x,
        y,
        batch_size=16,
        epochs=6,
        verbose=0,
        callbacks=[DistillationTeacher(teacher, 2.0, 0.5)],
    )
    losses = hist.history["loss"]
    assert np.all(np.diff(losses) < 0) and losses[-1] < 0.95 * losses[0], losses
    assert "compute_loss" not in qat.__dict__
    np.testing.assert_allclose(
        qat.evaluate(val_x, val_y, verbose=0)[0],
        np_ce(keras.ops.convert_to_numpy(qat(val_x, training=False)), val_y),
        rtol=1e-5,
    )
