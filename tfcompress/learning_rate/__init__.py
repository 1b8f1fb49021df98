"""Learning-rate schedules for compression (warm-up cosine, one-cycle, rewinding) and the
LearningRateRewinding callback."""
