"""Benchmarks W0–W7 (BENCHMARKS.md): `python -m benchmarks.run`."""
