"""Serializable quantizer objects (config + call) with straight-through gradients."""

__all__: list[str] = []
