"""Runnable benchmarks: ``python -m benchmarks.bench_<topic>``; results go to ``results/``."""
