"""Measurement scripts (``python -m benchmarks.NAME`` from the repository root): not installed
with the package; the bench stage's library code is ``edgedistill.benchmarks``."""
