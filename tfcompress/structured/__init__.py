"""Structured matrices: weight matrices described by far fewer than m*n parameters."""
