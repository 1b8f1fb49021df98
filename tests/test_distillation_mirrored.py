"""DistillationTeacher inside a MirroredStrategy over two logical CPU devices.

Logical devices must be configured before TensorFlow initialises its devices,
which the test session has already done, so the check runs in a subprocess.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    import keras, numpy as np
    from tfcompress.callbacks import DistillationTeacher
    from tfcompress.datasets import load_digits

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    keras.utils.set_random_seed(0)
    data = load_digits()
    x, y = data.x_train[:64], data.y_train[:64]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        inputs = keras.Input((8, 8, 1))
        h = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
        teacher = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(h)))
        student = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                    keras.layers.Dense(16, activation="relu"),
                                    keras.layers.Dense(10)])
        student.compile(optimizer=keras.optimizers.SGD(0.0),
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # lr = 0: the loss of one global batch, summed over the replicas.
    loss = student.fit(x, y, batch_size=64, epochs=1, verbose=0,
                       callbacks=[DistillationTeacher(teacher, 2.0, 0.6)]).history["loss"][0]
    s, t = np.asarray(student(x)), np.asarray(teacher(x))
    ce = -log_softmax(s)[np.arange(64), y].mean()
    lt, ls = log_softmax(t / 2.0), log_softmax(s / 2.0)
    kd = 4.0 * (np.exp(lt) * (lt - ls)).sum(-1).mean()
    # And it trains: weights move and stay identical across replicas.
    student.optimizer.learning_rate = 0.1
    before = [w.copy() for w in student.get_weights()]
    student.fit(x, y, batch_size=32, epochs=1, verbose=0,
                callbacks=[DistillationTeacher(teacher, 2.0, 0.6)])
    kernel = student.layers[-1].kernel
    replicas = [np.asarray(v) for v in kernel.values] if hasattr(kernel, "values") else []
    replicas = replicas or [np.asarray(v) for v in
                            strategy.experimental_local_results(kernel.value)]
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync, "loss": float(loss),
        "expected": float(0.4 * ce + 0.6 * kd),
        "moved": float(max(np.abs(a - b).max() for a, b in zip(before, student.get_weights()))),
        "replica_diff": float(max(np.abs(r - replicas[0]).max() for r in replicas)),
        "n_replica_values": len(replicas),
        "restored": "compute_loss" not in student.__dict__,
    }))
    """
)


def test_mirrored_strategy_two_logical_cpus(tmp_path):
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        cwd=root,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert abs(result["loss"] - result["expected"]) <= 1e-5 * abs(result["expected"])
    assert result["moved"] > 1e-4
    assert result["n_replica_values"] == 2 and result["replica_diff"] == 0.0
    assert result["restored"]
