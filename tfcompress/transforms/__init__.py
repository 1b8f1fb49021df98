"""Model -> model transforms that keep the trained weights."""

from tfcompress.transforms.factorize import FactorizeReport, factorize_model

__all__ = [
    "FactorizeReport",
    "factorize_model",
]
