"""GraphRunner: a graph model node by node, tensors dropped after last use, resumable passes."""

import warnings

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress import language_model as lm
from tfcompress.core.graph_runner import GraphRunner
from tfcompress.oneshot import sequential

pytestmark = pytest.mark.jax


class _StopHere(Exception):
    pass


def _tiny_lm():
    keras.utils.set_random_seed(0)
    return lm.byte_lm(context=16, d_model=32, num_layers=2, num_heads=4, ffn_units=64)


def _tokens(n=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 16)).astype("int32")


def _linear(layer):
    return isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense))


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


def test_outputs_equal_the_model_call_and_only_outputs_stay():
    model = _tiny_lm()
    x = _tokens()
    runner = GraphRunner(model)
    frontier = runner.start(x)
    outputs, kept = runner.run(frontier)
    _close(outputs, model(x, training=False))
    assert kept is None and frontier.position == len(runner.nodes)
    assert list(frontier.tensors) == [id(model.outputs[0])]


def test_sequential_multi_input_shared_and_nested_models():
    x = np.random.default_rng(1).normal(size=(5, 8)).astype("float32")
    seq = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(6, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(3),
        ]
    )
    runner = GraphRunner(seq)
    _close(runner.run(runner.start(x))[0], seq(x, training=False))

    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    shared = keras.layers.Dense(2, name="shared")
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="inner_dense")])
    merged = keras.layers.Concatenate()([shared(inner(a)), shared(b)])
    model = keras.Model({"a": a, "b": b}, [merged, shared(a)])
    data = {"a": x[:, :4], "b": x[:, 4:]}
    runner = GraphRunner(model)
    got, _ = runner.run(runner.start(data))
    for mine, theirs in zip(got, model(data, training=False)):
        _close(mine, theirs)


def test_a_stopped_pass_resumes_where_it_stopped():
    """Stopped inside block 1's attention: only the residual stream is alive there."""
    model = _tiny_lm()
    x = _tokens()
    runner = GraphRunner(model)
    attention = model.get_layer("block1_attn")
    position = next(i for i, n in enumerate(runner.nodes) if n.operation is attention)
    query = attention._query_dense
    saved = query.call

    def stop(*args, **kwargs):
        raise _StopHere()

    frontier = runner.start(x)
    object.__setattr__(query, "call", stop)
    try:
        outputs, kept = runner.run(frontier, stop=_StopHere, keep_at=position - 1)
    finally:
        object.__setattr__(query, "call", saved)
    assert outputs is None and frontier.position == position
    # The attention's input (layer norm output) and the residual it is added to.
    assert len(frontier.tensors) == 2
    assert kept.position == position - 1 and len(kept.tensors) == 1  # before ln1: x only
    assert kept.nbytes() == x.shape[0] * 16 * 32 * 4
    _close(runner.run(frontier)[0], model(x, training=False))
    _close(runner.run(kept)[0], model(x, training=False))


def test_other_models_are_refused():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    assert not GraphRunner.supports(Subclassed())
    with pytest.raises(TypeError, match="not a graph model"):
        GraphRunner(Subclassed())


def test_one_shot_resumes_from_cached_activations_with_identical_results(monkeypatch):
    """The node-by-node passes give the very weights the whole-model passes give."""
    model = _tiny_lm()
    x = _tokens(40, seed=2)
    kw = {"layers": _linear, "verbose": 0, "return_report": True, "batch_size": 16}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # singular Hessians on this little data
        graph, report = tfc.oneshot.prune(model, x, 0.5, **kw)
        monkeypatch.setattr(sequential.GraphRunner, "supports", staticmethod(lambda m: False))
        whole, whole_report = tfc.oneshot.prune(model, x, 0.5, **kw)
    assert report.passes == whole_report.passes == 9  # per block: qkv, output, up, down; head
    # Widest cut, before ffn_down: its input (64 units) and the residual (32) of all 40 windows.
    assert report.cached_activation_bytes == 40 * 16 * (64 + 32) * 4
    assert whole_report.cached_activation_bytes == 0
    for mine, theirs in zip(graph.get_weights(), whole.get_weights()):
        np.testing.assert_array_equal(mine, theirs)


def test_a_layer_called_before_and_after_other_targets_restarts_from_the_inputs():
    """Shared ``d`` is called at the start and the end: passes cannot resume past its calls."""
    inputs = keras.Input((6,))
    shared = keras.layers.Dense(6, name="d")
    h = shared(inputs)
    h = keras.layers.Dense(6, activation="relu", name="mid")(h)
    model = keras.Model(inputs, shared(h))
    x = np.random.default_rng(3).normal(size=(64, 6)).astype("float32")
    graph, report = tfc.oneshot.prune(model, x, 0.5, verbose=0, return_report=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sequential.GraphRunner, "supports", staticmethod(lambda m: False))
        whole = tfc.oneshot.prune(model, x, 0.5, verbose=0)
    assert report.passes == 2
    for mine, theirs in zip(graph.get_weights(), whole.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
