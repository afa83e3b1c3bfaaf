"""One-off tools that made the shipped demo data and teacher (``python -m scripts.NAME`` from
the repository root): not installed with the package."""
