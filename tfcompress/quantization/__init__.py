"""Quantization: the one quantizer system (uniform, learned, binary, ternary) and its registry,
the Quant* layers and quantize_model."""
