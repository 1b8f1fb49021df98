"""Demo techniques: one module per feature, each defining ``TECHNIQUES``."""
