"""Measuring models: against lesion labels (evaluate), the healthy population (normative), cohort
reports and benchmarks."""
