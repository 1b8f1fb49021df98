"""The anchors: the float model and TFLite's own post-training quantization."""

from tfcompress.demo.runner import DemoContext, Technique, TechniqueResult


def _float32(ctx: DemoContext) -> TechniqueResult:
    return TechniqueResult(ctx.float_model, note="baseline")


def _float16(ctx: DemoContext) -> TechniqueResult:
    return TechniqueResult(ctx.float_model, quantization="float16", note="TFLite PTQ")


def _dynamic(ctx: DemoContext) -> TechniqueResult:
    return TechniqueResult(ctx.float_model, quantization="dynamic", note="TFLite PTQ, int8 weights")


def _int8_ptq(ctx: DemoContext) -> TechniqueResult:
    return TechniqueResult(
        ctx.float_model, quantization="int8", calibrate=True, note="TFLite PTQ, full integer"
    )


TECHNIQUES = [
    Technique("float32", _float32, order=0),
    Technique("float16 PTQ", _float16, order=1),
    Technique("dynamic-range PTQ", _dynamic, order=2),
    Technique("int8 PTQ", _int8_ptq, order=3),
]
