"""Property test: truncated and mutated archives never crash the reader."""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tfcompress as tfc
from tfcompress.packing import PackFormatError, dumps, loads


def _archive() -> bytes:
    keras.utils.set_random_seed(0)
    model = tfc.models.digits_mlp(hidden=(6,), input_dim=5, num_classes=3)
    k = keras.ops.convert_to_numpy(model.layers[0].kernel).copy()  # writable on every backend
    k[np.abs(k) < 0.3] = 0
    model.layers[0].kernel.assign(k)
    return dumps(tfc.cluster_model(model, clusters=4, layers=["dense1"]))[0]


ARCHIVE = _archive()
X = np.linspace(-1, 1, 10, dtype="float32").reshape(2, 5)


def _check(data: bytes) -> None:
    try:
        model = loads(data)
    except PackFormatError:
        return
    # A mutation that still parses (e.g. a flipped weight bit) gives a working model.
    assert np.asarray(model(X)).shape == (2, 3)


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    cut=st.integers(0, len(ARCHIVE)),
    flips=st.lists(st.tuples(st.integers(0, len(ARCHIVE) - 1), st.integers(1, 255)), max_size=4),
    inserted=st.binary(max_size=8),
    where=st.integers(0, len(ARCHIVE)),
    truncate=st.booleans(),
)
def test_mutated_archives_fail_cleanly(cut, flips, inserted, where, truncate):
    data = bytearray(ARCHIVE)
    for position, mask in flips:
        data[position] ^= mask
    if inserted:
        data[where:where] = inserted
    if truncate:
        data = data[:cut]
    _check(bytes(data))


@pytest.mark.parametrize("cut", range(0, len(ARCHIVE), 7))
def test_every_truncation_is_refused(cut):
    with pytest.raises(PackFormatError):
        loads(ARCHIVE[:cut])
