"""The public names of tfcompress: adding one is a decision, removing one breaks users."""

import tfcompress as tfc

# One name per line: feature branches append theirs.
EXPECTED_TOP_LEVEL = {
    "__version__",
    "callbacks",
    "datasets",
    "layers",
    "models",
    "ops",
    "quantizers",
    "reporting",
    "schedules",
    "summary",
    "tflite_export",
    "transforms",
    "factorize_model",
}

EXPECTED_EXPORT = {
    "QUANTIZATION_MODES",
    "ExportReport",
    "OpInfo",
    "TFLiteModel",
    "convert",
    "export",
    "is_quantization_aware",
}


def test_top_level_names():
    assert set(tfc.__all__) == EXPECTED_TOP_LEVEL
    for name in tfc.__all__:
        assert hasattr(tfc, name), name


def test_tflite_export_names():
    assert set(tfc.tflite_export.__all__) == EXPECTED_EXPORT


def test_subpackage_all_names_resolve():
    for package in (tfc.layers, tfc.quantizers, tfc.callbacks, tfc.transforms, tfc.schedules,
                    tfc.ops, tfc.reporting, tfc.tflite_export):
        for name in package.__all__:
            assert hasattr(package, name), f"{package.__name__}.{name}"


def test_lowrank_names():
    assert {"LowRankDense", "LowRankConv2D"} <= set(tfc.layers.__all__)
    assert {"factorize_model", "FactorizeReport"} <= set(tfc.transforms.__all__)
    assert "lowrank" in tfc.ops.__all__
    assert tfc.factorize_model is tfc.transforms.factorize_model
