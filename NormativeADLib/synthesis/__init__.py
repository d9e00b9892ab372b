"""Synthetic anomalies, contrasts and whole studies drawn on healthy anatomy: what models train on and
what thresholds and defaults are chosen on."""
