"""Distillation: losses (plain references first), the trainer and the training stage."""

from edgedistill.pipeline.distill.stage import OUTPUTS, RESUMABLE, SHARED_FOLDERS, run

__all__ = ["OUTPUTS", "RESUMABLE", "SHARED_FOLDERS", "run"]
