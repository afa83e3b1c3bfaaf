"""Held-out quality of a student against its teacher (torch side)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edgedistill.pipeline.distill.losses import forward_kl_per_token


@torch.no_grad()
def compare_on_heldout(student, teacher, sequences: torch.Tensor, batch_size: int = 8) -> dict[str, float]:
    """Next-token metrics over held-out ``sequences`` (N, L), every position but the last.

    Returns student/teacher perplexity and top-1 accuracy, top-1 agreement of the student
    with the teacher, and mean forward KL(p_teacher || p_student) at T=1 (nats/token).
    """
    totals = {"student_nll": 0.0, "teacher_nll": 0.0, "student_hits": 0, "teacher_hits": 0, "agree": 0, "kl": 0.0}
    tokens = 0
    for batch in sequences.split(batch_size):
        labels = batch[:, 1:].reshape(-1)  # (B*(L-1),)
        student_logits = student(batch).logits[:, :-1].reshape(labels.numel(), -1).float()  # (B*(L-1), V)
        teacher_logits = teacher(batch).logits[:, :-1].reshape(labels.numel(), -1).float()
        totals["student_nll"] += F.cross_entropy(student_logits, labels, reduction="sum").item()
        totals["teacher_nll"] += F.cross_entropy(teacher_logits, labels, reduction="sum").item()
        student_top1, teacher_top1 = student_logits.argmax(-1), teacher_logits.argmax(-1)
        totals["student_hits"] += (student_top1 == labels).sum().item()
        totals["teacher_hits"] += (teacher_top1 == labels).sum().item()
        totals["agree"] += (student_top1 == teacher_top1).sum().item()
        totals["kl"] += forward_kl_per_token(student_logits, teacher_logits, 1.0).sum().item()
        tokens += labels.numel()
    return {
        "student_val_ppl": math.exp(totals["student_nll"] / tokens),
        "teacher_val_ppl": math.exp(totals["teacher_nll"] / tokens),
        "student_val_top1": totals["student_hits"] / tokens,
        "teacher_val_top1": totals["teacher_hits"] / tokens,
        "student_teacher_top1_agreement": totals["agree"] / tokens,
        "student_teacher_kl": totals["kl"] / tokens,
    }
