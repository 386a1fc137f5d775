"""Runnable benchmarks: ``python -m benchmarks.suite`` runs them all; results go to ``results/``."""
