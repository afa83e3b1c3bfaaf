"""Plain reference distillation losses (readable by eye; the ground truth for fast paths).

Conventions (DESIGN.md, "Numerics conventions"):

* Forward KL = KL(p_teacher || p_student) = sum_v p_t(v) (log p_t(v) - log p_s(v)),
  the mode-covering divergence of Hinton et al. (2015).
* Temperature T divides both teacher and student logits before the softmax; the KD term
  is multiplied by T^2 unless ``scale_by_t2=False`` (keeps gradient magnitude comparable
  across temperatures, Hinton et al. 2015, section 2.1).
* Total loss = alpha * KD + (1 - alpha) * CE(student logits at T=1, labels).
* Both terms are summed over non-ignored tokens and divided by ``num_tokens``: the count
  of non-ignored tokens in the whole optimizer step (defaults to this batch's count). An
  all-ignored batch gives loss 0 and zero gradients.
* Everything is computed in fp32; ignored rows are zeroed before the sum, never after.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def forward_kl_per_token(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_t || p_s) per row at temperature T. (N, V), (N, V) -> (N,), no T^2 factor.

    Vocabulary entries the teacher gives zero probability (logit -inf, e.g. masked padded
    rows) contribute 0, as 0 * log 0 = 0 by convention, instead of NaN.
    """
    student_logprobs = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (N, V)
    teacher_logprobs = F.log_softmax(teacher_logits.float() / temperature, dim=-1)  # (N, V)
    teacher_probs = teacher_logprobs.exp()
    terms = torch.where(teacher_probs > 0, teacher_probs * (teacher_logprobs - student_logprobs), 0.0)  # (N, V)
    return terms.sum(dim=-1)


# Registry of KD divergences, name -> per-token function (N, V), (N, V), T -> (N,).
KD_OBJECTIVES: dict[str, Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    "forward_kl": forward_kl_per_token,
}


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
    objective: str = "forward_kl",
    scale_by_t2: bool = True,
    num_tokens: int | torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``alpha * KD + (1 - alpha) * CE``, normalized by non-ignored tokens.

    student_logits, teacher_logits: (N, V) (flattened positions); labels: (N,) with
    ``ignore_index`` for positions that carry no target. Returns (loss, {"kd", "ce"}) where
    the parts are the unweighted, normalized terms (kd includes T^2 when scaled).
    """
    mask = labels != ignore_index  # (N,)
    denominator = (mask.sum() if num_tokens is None else torch.as_tensor(num_tokens)).clamp(min=1).float()
    kd_rows = KD_OBJECTIVES[objective](student_logits, teacher_logits, temperature)  # (N,)
    kd = torch.where(mask, kd_rows, torch.zeros_like(kd_rows)).sum() / denominator
    if scale_by_t2:
        kd = kd * temperature**2
    ce = F.cross_entropy(student_logits.float(), labels, ignore_index=ignore_index, reduction="sum") / denominator
    return alpha * kd + (1.0 - alpha) * ce, {"kd": kd.detach(), "ce": ce.detach()}
