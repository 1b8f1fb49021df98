"""tfc.pack / tfc.unpack: exact round trips, compact encodings, refusal of bad files."""

import json
import struct
import zlib

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.packing import PackFormatError, dumps, loads


def _pruned(model, fraction=0.8):
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            k = keras.ops.convert_to_numpy(layer.kernel).copy()  # writable on every backend
            k[np.abs(k) < np.quantile(np.abs(k), fraction)] = 0
            layer.kernel.assign(k)
    return model


def _models():
    keras.utils.set_random_seed(0)
    mlp = tfc.models.digits_mlp(hidden=(32, 16))
    cnn = tfc.models.digits_cnn()
    inputs = keras.Input((8, 8, 1))
    inner = keras.Sequential([keras.Input((64,)), keras.layers.Dense(12, name="inner_d")])
    x = keras.layers.Conv2D(4, 3, name="fc")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    y = keras.layers.Flatten()(x)
    functional = keras.Model(
        inputs,
        keras.layers.Dense(10, name="head")(
            keras.layers.Concatenate()([y, inner(keras.layers.Flatten()(inputs))])
        ),
    )
    return {
        "mlp": mlp,
        "cnn": cnn,
        "functional_nested_bn": functional,
        "pruned_mlp": _pruned(tfc.models.digits_mlp(hidden=(32, 16))),
        "clustered_pruned_mlp": tfc.cluster_model(
            _pruned(tfc.models.digits_mlp(hidden=(32, 16))), clusters=8
        ),
        "clustered_cnn_per_channel": tfc.cluster_model(
            _pruned(tfc.models.digits_cnn(), 0.5), clusters=4, per_channel=True
        ),
    }


@pytest.mark.parametrize("name", list(_models()))
def test_round_trip_is_exact(name, tmp_path):
    model = _models()[name]
    shape = (16, *model.input_shape[1:])
    x = np.random.default_rng(0).random(shape).astype("float32")
    report = tfc.pack(model, tmp_path / "m.tfcp")
    assert report.bytes == (tmp_path / "m.tfcp").stat().st_size
    restored = tfc.unpack(tmp_path / "m.tfcp")
    assert [type(layer).__name__ for layer in restored.layers] == [
        type(layer).__name__ for layer in model.layers
    ]
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(restored(x)))


def test_encodings_are_compact():
    model = _pruned(tfc.models.digits_mlp(), 0.9)
    float_bytes = 4 * model.count_params()
    data, report = dumps(model)
    encodings = {path: enc for path, _, enc, _ in report.tensors}
    assert encodings["digits_mlp/dense1/kernel"] == "sparse"
    # 10% nonzeros at 4 bytes + a few bits of relative index each.
    assert len(data) < 0.16 * float_bytes
    clustered = tfc.cluster_model(model, clusters=16)
    data_c, report_c = dumps(clustered)
    enc = {path: e for path, _, e, _ in report_c.tensors}
    assert enc["digits_mlp/dense1/cluster_indices"] in ("huffman", "sparse+huffman")
    assert len(data_c) < len(data) / 2
    # Huffman beats 4-bit fixed-width indices on the clustered kernel.
    size = {path: b for path, _, _, b in report_c.tensors}
    assert size["digits_mlp/dense2/cluster_indices"] < 300 * 100 * 5 / 8


def test_negative_zero_and_special_values_survive():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="d")])
    k = np.array([[0.0, -0.0, 1.5, 0], [0, 0, 0, 0], [np.inf, 0, -2, 0]], "float32")
    model.layers[0].kernel.assign(k)
    restored = loads(dumps(model)[0])
    out = np.asarray(restored.layers[0].kernel)
    np.testing.assert_array_equal(out, k)  # -0.0 is stored as +0.0: equal by value
    x = np.array([[1.0, -2.0, 0.5]], "float32")
    np.testing.assert_array_equal(np.asarray(restored(x)), np.asarray(model(x)))


def test_another_format_is_refused(tmp_path):
    model = tfc.models.digits_mlp(hidden=(8,))
    keras_file = tmp_path / "m.keras"
    model.save(keras_file)
    with pytest.raises(PackFormatError, match="not a tfcompress archive"):
        tfc.unpack(keras_file)
    for junk in (b"", b"TFC", b"\x89PNG\r\n\x1a\n" + b"\0" * 40):
        with pytest.raises(PackFormatError):
            loads(junk)


def test_version_2_checksum_and_length_are_checked_before_decoding(tmp_path):
    model = tfc.models.digits_mlp(hidden=(8,))
    report = tfc.pack(model, tmp_path / "m.tfcp")
    data = (tmp_path / "m.tfcp").read_bytes()
    assert data[8:10] == struct.pack("<H", 2) and report.bytes == len(data)
    assert struct.unpack("<Q", data[12:20])[0] == len(data)
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10  # one bit in the middle of the weights
    (tmp_path / "bad.tfcp").write_bytes(bytes(flipped))
    with pytest.raises(tfc.UnreadableFileError, match="checksum mismatch") as caught:
        tfc.unpack(tmp_path / "bad.tfcp")
    assert caught.value.path == str(tmp_path / "bad.tfcp")
    assert str(caught.value).startswith(f"cannot read {str(tmp_path / 'bad.tfcp')!r}: ")
    with pytest.raises(
        PackFormatError, match=f"truncated at byte 100: the header declares {len(data)}"
    ):
        loads(data[:100], path="cut.tfcp")
    with pytest.raises(FileNotFoundError):
        tfc.unpack(tmp_path / "missing.tfcp")


def _reseal(data: bytes) -> bytes:
    """A forged version-2 archive: length and CRC-32 recomputed over edited bytes."""
    body = data[:-4]
    body = body[:12] + struct.pack("<Q", len(body) + 4) + body[20:]
    return body + struct.pack("<I", zlib.crc32(body))


def _with_config(data: bytes, edit) -> bytes:
    (length,) = struct.unpack("<I", data[20:24])
    config = json.loads(zlib.decompress(data[24 : 24 + length]))
    new = zlib.compress(json.dumps(edit(config)).encode())
    return _reseal(data[:20] + struct.pack("<I", len(new)) + new + data[24 + length :])


def test_specific_malformations_are_refused():
    model = tfc.cluster_model(_pruned(tfc.models.digits_mlp(hidden=(8,))), clusters=4)
    data, _ = dumps(model)
    with pytest.raises(PackFormatError, match="version"):
        loads(data[:8] + struct.pack("<H", 99) + data[10:])
    with pytest.raises(PackFormatError, match="1 unexpected bytes after the declared end"):
        loads(data + b"\0")
    # Past the checksum, the decoder still refuses what does not parse.
    with pytest.raises(PackFormatError, match="trailing bytes after the last record"):
        loads(_reseal(data[:-4] + b"\0" + data[-4:]))

    def evil_module(config):
        config["config"]["layers"][1]["module"] = "os"
        return config

    with pytest.raises(PackFormatError, match="module 'os'"):
        loads(_with_config(data, evil_module))

    def lambda_layer(config):
        config["config"]["layers"][1] = {
            "module": "keras.layers",
            "class_name": "Lambda",
            "config": {"function": {"class_name": "__lambda__", "config": {"code": "x"}}},
            "registered_name": None,
        }
        return config

    with pytest.raises(PackFormatError):
        loads(_with_config(data, lambda_layer))

    def huge_layer(config):
        config["config"]["layers"][1]["config"]["units"] = 200_000_000
        config["config"]["layers"][2]["build_config"]["input_shape"] = [None, 200_000_000]
        return config

    with pytest.raises(PackFormatError, match="does not match"):
        loads(_with_config(data, huge_layer))

    def fewer_clusters(config):  # indices now point past the codebook table
        config["config"]["layers"][1]["config"]["clusters"] = 2
        return config

    with pytest.raises(PackFormatError):
        loads(_with_config(data, fewer_clusters))
