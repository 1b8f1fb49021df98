"""One-shot post-training compression from calibration data, no retraining."""
