"""Property tests: a mutated archive of either kind is refused with UnreadableFileError or loads
with outputs identical to the original's; a forged archive (checksum recomputed) never crashes
the decoder."""

import struct
import zlib

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tfcompress as tfc
from tfcompress.packing import PackFormatError, dumps, load_packed, loads, save_packed

X = np.linspace(-1, 1, 10, dtype="float32").reshape(2, 5)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


def _clustered_pruned():
    keras.utils.set_random_seed(0)
    model = tfc.models.digits_mlp(hidden=(6,), input_dim=5, num_classes=3)
    k = keras.ops.convert_to_numpy(model.layers[0].kernel).copy()  # writable on every backend
    k[np.abs(k) < 0.3] = 0
    model.layers[0].kernel.assign(k)
    return tfc.cluster_model(model, clusters=4, layers=["dense1"])


def _binary_ternary():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            tfc.layers.BinaryDense(6, name="b"),
            tfc.layers.BinaryDense(4, kernel_quantizer="ttq", name="t"),
            keras.layers.Dense(3, name="d"),
        ]
    )
    # Different positive and negative scales: the store keeps a separate "neg" array.
    model.get_layer("t").weights[2].assign(np.full(4, 0.7, "float32"))
    model.get_layer("t").weights[3].assign(np.full(4, 1.3, "float32"))
    return model


PACKED = _clustered_pruned()
ARCHIVE = dumps(PACKED)[0]
EXPECTED = np.asarray(PACKED(X))
BINARY = _binary_ternary()
EXPECTED_BINARY = np.asarray(BINARY(X))


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    save_packed(BINARY, folder / "original.npz")
    return folder


def _mutate(data: bytes, kind: int, at: float, size: int, seed: int) -> bytes:
    """One of four mutations at relative position ``at``: flip, truncate, insert, overwrite."""
    rng = np.random.default_rng(seed)
    out = bytearray(data)
    pos = min(int(at * len(out)), len(out) - 1)
    if kind == 0:  # flip 1..size bits
        for bit in rng.choice(8 * len(out), size=min(size, 8), replace=False):
            out[bit // 8] ^= 1 << (bit % 8)
    elif kind == 1:
        del out[pos:]
    elif kind == 2:
        out[pos:pos] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    else:
        out[pos : pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    return bytes(out)


MUTATIONS = {
    "kind": st.integers(0, 3),
    "at": st.floats(0, 1),
    "size": st.integers(1, 16),
    "seed": st.integers(0, 2**32 - 1),
}


@FUZZ
@given(**MUTATIONS)
def test_mutated_tfcp_is_refused_or_identical(kind, at, size, seed):
    data = _mutate(ARCHIVE, kind, at, size, seed)
    try:
        model = loads(data, path="fuzz.tfcp")
    except tfc.UnreadableFileError as error:
        assert error.path == "fuzz.tfcp" and error.reason
        return
    np.testing.assert_array_equal(np.asarray(model(X)), EXPECTED)


@FUZZ
@given(**MUTATIONS)
def test_mutated_packed_store_is_refused_or_identical(store_dir, kind, at, size, seed):
    path = store_dir / "mutated.npz"
    path.write_bytes(_mutate((store_dir / "original.npz").read_bytes(), kind, at, size, seed))
    try:
        model = load_packed(path)
    except tfc.UnreadableFileError as error:
        assert error.path == str(path) and error.reason
        return
    np.testing.assert_array_equal(np.asarray(model(X)), EXPECTED_BINARY)


def _forge(body: bytes) -> bytes:
    """Declared length and CRC-32 made to match ``body``: what a deliberate forger would do."""
    body = body[:12] + struct.pack("<Q", len(body) + 4) + body[20:]
    return body + struct.pack("<I", zlib.crc32(body))


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    cut=st.integers(24, len(ARCHIVE) - 4),
    flips=st.lists(st.tuples(st.integers(20, len(ARCHIVE) - 5), st.integers(1, 255)), max_size=4),
    inserted=st.binary(max_size=8),
    where=st.integers(24, len(ARCHIVE) - 4),
    truncate=st.booleans(),
)
def test_forged_archives_fail_cleanly(cut, flips, inserted, where, truncate):
    # Past a matching checksum the decoder still validates every field: a forged file is
    # refused with our error or gives a working model, never another exception.
    data = bytearray(ARCHIVE[:-4])
    for position, mask in flips:
        data[position] ^= mask
    if inserted:
        data[where:where] = inserted
    if truncate:
        data = data[:cut]
    try:
        model = loads(_forge(bytes(data)))
    except PackFormatError:
        return
    assert np.asarray(model(X)).shape == (2, 3)


@pytest.mark.parametrize("cut", range(0, len(ARCHIVE), 7))
def test_every_truncation_is_refused(cut):
    with pytest.raises(PackFormatError, match=r"truncated at byte|the file is empty"):
        loads(ARCHIVE[:cut])
