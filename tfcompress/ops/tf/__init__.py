"""TensorFlow-only kernels ("custom TF ops"), each with a pure-TensorFlow fallback."""

__all__: list[str] = []
