"""Low-rank factorization: decompositions, LowRank* layers and factorize_model."""
