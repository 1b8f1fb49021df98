"""Keras layers you swap in: quantized, binary/ternary, low-rank and clustered."""

__all__: list[str] = []
