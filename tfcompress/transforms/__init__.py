"""Model -> model transforms that keep the trained weights."""

__all__: list[str] = []
