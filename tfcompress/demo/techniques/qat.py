"""Quantization-aware training: quantize_model + a short fine-tune, exported as full int8."""

from tfcompress.demo.runner import DemoContext, Technique, TechniqueResult
from tfcompress.models import train_classifier
from tfcompress.quantization.quantize_model import quantize_model


def _qat(config, note):
    def run(ctx: DemoContext) -> TechniqueResult:
        # quantize_model copies the model, so the shared float model is untouched.
        model = quantize_model(ctx.float_model, config)
        train_classifier(model, ctx.data, epochs=ctx.epochs, learning_rate=3e-4)
        return TechniqueResult(model, quantization="int8", note=note)

    return run


TECHNIQUES = [
    Technique("QAT int8", _qat(None, "tfcompress QAT, no calibration data"), order=10),
    Technique("QAT int4 weights", _qat("int4", "4-bit weight grid, int8 activations"), order=11),
]
