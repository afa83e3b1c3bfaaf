"""Distillation: losses (plain references first) and the training stage."""

from edgedistill.pipeline.distill.stage import OUTPUTS, run

__all__ = ["OUTPUTS", "run"]
