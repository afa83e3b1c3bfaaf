"""The learning-rate schedule of the distill trainer and of the demo teacher's training
script: linear warmup, then constant or cosine decay to 10% of the peak. No torch here,
so a script can share it without importing the trainer."""

from __future__ import annotations

import math


def learning_rate_at(step: int, distill_cfg) -> float:
    """:func:`warmup_then_decay` with the recipe's ``distill`` settings."""
    return warmup_then_decay(step, distill_cfg.steps, distill_cfg.learning_rate, distill_cfg.warmup_steps,
                             distill_cfg.lr_schedule)


def warmup_then_decay(step: int, total: int, peak: float, warmup: int, schedule: str = "cosine") -> float:
    """Linear warmup to ``peak`` over ``warmup`` steps, then constant or cosine decay to 10%
    of it at ``total`` (and 10% after). The one schedule of the distill trainer and of the
    demo teacher's training script."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant":
        return peak
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress))))
