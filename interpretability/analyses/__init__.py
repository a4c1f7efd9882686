"""Analyses: ``python -m interpretability.analyses.localisation`` (grid pointing game) and its SLURM launcher."""
