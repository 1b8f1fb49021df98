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
    "quantize_model",
    "binarize_model",
    "optimizers",
    "packing",
    "prune_at_init",
    "shrink_model",
    "pack",
    "unpack",
    "cluster_model",
    "remove_masks",
    "UnreadableFileError",
    "oneshot",
    "allocate",
    "compact_model",
    "structure_model",
    "to_transferred",
    "distribute",
}

EXPECTED_ONESHOT = {
    "COMPRESS_METHODS",
    "PRUNE_METHODS",
    "QUANTIZE_METHODS",
    "SUPPORTED_BITS",
    "LayerReport",
    "OneShotReport",
    "compress",
    "prune",
    "quantize",
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


EXPECTED_QUANTIZERS = {
    "Quantizer",
    "LQNetQuantizer",
    "LSQQuantizer",
    "PACTQuantizer",
    "PRESETS",
    "deserialize",
    "get",
    "register_preset",
    "serialize",
    "MinMaxQuantizer",
    "MovingAverageQuantizer",
    "ApproxSign",
    "BinaryQuantizer",
    "DoReFa",
    "IRNetSign",
    "LibraPBSign",
    "MagnitudeAwareSign",
    "MirrorTanhQuantizer",
    "MirrorTanhSign",
    "SteSign",
    "SteTern",
    "SwishSign",
    "TTQ",
}

EXPECTED_QUANT_LAYERS = {
    "QuantizeActivation",
    "QuantConv1D",
    "QuantConv2D",
    "QuantDepthwiseConv2D",
    "QuantDense",
    "QuantizeOutput",
    "QuantConv2DTranspose",
    "QuantSeparableConv2D",
}


def test_quantizers_names():
    assert set(tfc.quantizers.__all__) == EXPECTED_QUANTIZERS


def test_quant_layer_names():
    assert set(tfc.layers.__all__) >= EXPECTED_QUANT_LAYERS
    assert set(tfc.transforms.__all__) >= {"QuantizeConfig", "quantize_model"}


def test_top_level_names():
    assert set(tfc.__all__) == EXPECTED_TOP_LEVEL
    for name in tfc.__all__:
        assert hasattr(tfc, name), name


def test_tflite_export_names():
    assert set(tfc.tflite_export.__all__) == EXPECTED_EXPORT


def test_subpackage_all_names_resolve():
    for package in (
        tfc.layers,
        tfc.quantizers,
        tfc.callbacks,
        tfc.transforms,
        tfc.schedules,
        tfc.ops,
        tfc.reporting,
        tfc.tflite_export,
    ):
        for name in package.__all__:
            assert hasattr(package, name), f"{package.__name__}.{name}"


def test_lowrank_names():
    assert {"LowRankDense", "LowRankConv2D"} <= set(tfc.layers.__all__)
    assert {"factorize_model", "FactorizeReport", "expand_lowrank"} <= set(tfc.transforms.__all__)
    assert "lowrank" in tfc.ops.__all__
    assert tfc.factorize_model is tfc.transforms.factorize_model


# Issue 5 (distillation + learning-rate schedules): subsets, so other branches' names merge freely.
EXPECTED_DISTILLATION_CALLBACKS = {
    "DistillationTeacher",
    "LearningRateRewinding",
    "mask_update_steps",
}
EXPECTED_LR_SCHEDULES = {
    "OneCycle",
    "Rewinding",
    "WarmupCosine",
    "one_cycle",
    "rewound_step",
    "warmup_cosine",
}
EXPECTED_DISTILLATION_OPS = {
    "blend_losses",
    "hint_loss",
    "soft_target_loss",
}


def test_distillation_and_lr_schedule_names():
    assert set(tfc.callbacks.__all__) >= EXPECTED_DISTILLATION_CALLBACKS
    assert set(tfc.schedules.__all__) >= EXPECTED_LR_SCHEDULES
    assert set(tfc.ops.__all__) >= EXPECTED_DISTILLATION_OPS


EXPECTED_OPS_TF = {
    "binary_conv2d",
    "binary_conv2d_inference",
    "binary_dense_inference",
    "binary_matmul",
    "has_compiled_kernels",
    "kernel_isa",
    "pack_bits",
    "pack_conv2d_kernel",
    "pack_dense_kernel",
    "unpack_bits",
}


def test_ops_tf_names():
    assert set(tfc.ops.tf.__all__) == EXPECTED_OPS_TF
    for name in tfc.ops.tf.__all__:
        assert hasattr(tfc.ops.tf, name), name


# Pruning (issue 4): subsets, so other branches' names merge freely.
EXPECTED_PRUNING = {
    "callbacks": {"GradualPruning", "KeepSparsity", "DynamicSparseTraining"},
    "schedules": {"PolynomialSparsity", "ConstantSparsity", "SparsitySchedule"},
    "transforms": {"shrink_model", "prune_at_init"},
}
EXPECTED_PRUNING_MASKS = {
    "transforms": {"remove_masks"},
}


def test_pruning_names():
    for package, names in EXPECTED_PRUNING.items():
        assert names <= set(getattr(tfc, package).__all__), package
    for package, names in EXPECTED_PRUNING_MASKS.items():
        assert names <= set(getattr(tfc, package).__all__), package
    assert tfc.remove_masks is tfc.transforms.remove_masks is tfc.pruning.remove_masks


# Packed binary inference (issues 7 + 9).
EXPECTED_BINARY_INFERENCE = {
    "layers": {"freeze_binary", "unfreeze_binary"},
    "models": {"digits_binary_cnn", "digits_float_twin"},
}


def test_binary_inference_names():
    for package, names in EXPECTED_BINARY_INFERENCE.items():
        assert names <= set(getattr(tfc, package).__all__), package


EXPECTED_ALLOCATE = {
    "BitsPlan",
    "LayerChoice",
    "Plan",
    "SparsityPlan",
    "bits",
    "container_bits",
    "sparsity",
}


def test_allocate_names():
    assert set(tfc.allocate.__all__) == EXPECTED_ALLOCATE
    assert tfc.allocate.bits is tfc.allocation.bits
    assert callable(tfc.allocate.sparsity) and callable(tfc.allocate.bits)


def test_oneshot_names():
    assert set(tfc.oneshot.__all__) == EXPECTED_ONESHOT
    for name in EXPECTED_ONESHOT:
        assert getattr(tfc.oneshot, name) is not None


# M-FAC (issue 19): the criterion for GradualPruning(criterion="mfac").
def test_mfac_criterion_names():
    import tfcompress.pruning

    assert {"MFACCriterion", "PruningMask", "remove_masks"} <= set(tfcompress.pruning.__all__)
    for name in tfcompress.pruning.__all__:
        assert hasattr(tfcompress.pruning, name), name


def test_structured_and_compact_names():
    assert {"CirculantDense", "ToeplitzDense", "TransferredConv2D"} <= set(tfc.layers.__all__)
    assert {
        "CompactReport",
        "StructureReport",
        "TransferReport",
        "compact_model",
        "densify",
        "structure_model",
        "to_transferred",
    } <= set(tfc.transforms.__all__)
    assert tfc.compact_model is tfc.transforms.compact_model
    assert tfc.structure_model is tfc.transforms.structure_model
    assert tfc.to_transferred is tfc.transforms.to_transferred
