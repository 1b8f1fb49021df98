"""Weight clustering (k-means weight sharing): k-means, Clustered* layers and cluster_model."""
