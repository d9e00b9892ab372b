"""Training a model on healthy cohorts, calibrating its thresholds and choosing its policy on
synthetic anomalies."""
