"""`.keras` files saved by the code before the layout move load and give the same outputs.

The fixtures in ``fixtures/layout_v0`` were written by ``fixtures/make_layout_fixtures.py`` at
the commit before the modules moved into technique folders; they must keep loading with
``safe_mode=True`` whatever the modules are called now. Outputs are compared up to float32
rounding: the fixtures were written on an AVX-512 CPU, and TensorFlow's matmul kernels sum in
another order on AVX2-only ones (differences of ~1e-7 measured).
"""

from pathlib import Path

import keras
import numpy as np
import pytest

import tfcompress as tfc

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "layout_v0"
FAMILIES = sorted(path.stem for path in FIXTURES.glob("*.keras"))


def test_every_layer_family_has_a_fixture():
    assert set(FAMILIES) >= {
        "binary",
        "binary_frozen",
        "binary_ttq_dorefa",
        "clustered",
        "lowrank",
        "quant_conv",
        "quant_dense",
        "quant_dense_lsq_pact",
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_model_loads_with_equal_outputs(family):
    data = np.load(FIXTURES / f"{family}.npz")
    model = keras.saving.load_model(FIXTURES / f"{family}.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(model(data["x"])), data["y"], rtol=1e-5, atol=1e-6)


def test_version_1_archive_loads_with_equal_outputs_and_a_warning():
    data = np.load(FIXTURES / "archive_v1.npz")
    with pytest.warns(UserWarning, match="version-1 .tfcp archive: it carries no checksum"):
        model = tfc.unpack(FIXTURES / "archive_v1.tfcp")
    np.testing.assert_allclose(np.asarray(model(data["x"])), data["y"], rtol=1e-5, atol=1e-6)
    # Unlike version 2, a damaged version-1 file can only be caught by the decoder's checks.
    damaged = bytearray((FIXTURES / "archive_v1.tfcp").read_bytes())
    del damaged[-3:]
    with pytest.raises(tfc.UnreadableFileError, match="truncated"):
        tfc.packing.loads(bytes(damaged))
