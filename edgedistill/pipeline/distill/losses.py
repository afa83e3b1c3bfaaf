"""Plain reference distillation losses (readable by eye; the ground truth for fast paths).

Conventions (DESIGN.md, "Numerics conventions"), p_t = teacher, p_s = student, both
softmax(logits / T):

* ``forward_kl`` = KL(p_t || p_s) = sum_v p_t (log p_t - log p_s): mode-covering
  (Hinton et al., 2015).
* ``reverse_kl`` = KL(p_s || p_t): mode-seeking (MiniLLM, Gu et al., 2024).
* ``jsd`` = generalized JSD(beta) of GKD (Agarwal et al., 2024) with the mixture
  M = beta * p_t + (1 - beta) * p_s: beta * KL(p_t || M) + (1 - beta) * KL(p_s || M).
  The endpoints are defined as in GKD's reference code: beta = 0 -> forward KL,
  beta = 1 -> reverse KL (the mixture formula itself tends to 0 there).
* ``skew_kl`` = KL(p_t || a * p_t + (1 - a) * p_s) and ``skew_reverse_kl`` =
  KL(p_s || a * p_s + (1 - a) * p_t) with a = ``skew_alpha`` (DistiLLM, Ko et al., 2024).
* The KD term is multiplied by T^2 unless ``scale_by_t2=False`` (keeps gradient magnitude
  comparable across temperatures, Hinton et al. 2015, section 2.1).
* Total loss = alpha * KD + (1 - alpha) * CE(student logits at T=1, labels).
* Both terms are summed over non-ignored tokens and divided by ``num_tokens``: the count
  of non-ignored tokens in the whole optimizer step (defaults to this batch's count). An
  all-ignored batch gives loss 0 and zero gradients.
* Everything is computed in fp32; mixtures are built in log space with logsumexp;
  entries with zero probability contribute 0 (0 * log 0 = 0), never NaN.
* Sparse teacher (an offline top-k cache): only the teacher's k most likely tokens and
  their log-probabilities are known. ``sparse_forward_kl_per_token`` is the exact KL
  between (k + 1)-bucket coarsenings of the two distributions: the k cached tokens, plus
  one tail bucket holding the teacher's remaining mass 1 - sum(p_t,topk) against the
  student's mass outside those k tokens. It equals forward KL when the k tokens carry all
  of the teacher's mass, and is a lower bound on it otherwise. The cached log-probs must
  be at the KD temperature (the student is tempered here; a top-k cache cannot be).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
# exp(x) is exactly 0 in fp32 for x < -104: clamping log-probs here changes no probability
# but keeps masked (-inf) vocabulary entries finite, so no gradient is 0 * inf = NaN.
LOGPROB_FLOOR = -1e4


def kl_rows(p_logprobs: torch.Tensor, q_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row from log-probabilities. (N, V), (N, V) -> (N,)."""
    p = p_logprobs.exp()
    log_ratio = torch.where(p > 0, p_logprobs - q_logprobs, 0.0)  # 0 * log 0 = 0
    return (p * log_ratio).sum(dim=-1)


def log_mixture(a_logprobs: torch.Tensor, b_logprobs: torch.Tensor, weight_a: float) -> torch.Tensor:
    """log(w * a + (1 - w) * b) computed with logsumexp, 0 < w < 1. (N, V) -> (N, V)."""
    return torch.logaddexp(a_logprobs + math.log(weight_a), b_logprobs + math.log1p(-weight_a))


def _logprobs(student_logits, teacher_logits, temperature):
    return (F.log_softmax(student_logits.float() / temperature, dim=-1).clamp(min=LOGPROB_FLOOR),  # (N, V)
            F.log_softmax(teacher_logits.float() / temperature, dim=-1).clamp(min=LOGPROB_FLOOR))


def forward_kl_per_token(student_logits, teacher_logits, temperature: float) -> torch.Tensor:
    """KL(p_t || p_s) per row at temperature T. (N, V), (N, V) -> (N,), no T^2 factor."""
    student_logprobs, teacher_logprobs = _logprobs(student_logits, teacher_logits, temperature)
    return kl_rows(teacher_logprobs, student_logprobs)


def reverse_kl_per_token(student_logits, teacher_logits, temperature: float) -> torch.Tensor:
    """KL(p_s || p_t) per row at temperature T. (N, V), (N, V) -> (N,)."""
    student_logprobs, teacher_logprobs = _logprobs(student_logits, teacher_logits, temperature)
    return kl_rows(student_logprobs, teacher_logprobs)


def jsd_per_token(student_logits, teacher_logits, temperature: float, beta: float) -> torch.Tensor:
    """Generalized JSD(beta) per row (GKD); beta = 0 / 1 are forward / reverse KL."""
    if beta == 0.0:
        return forward_kl_per_token(student_logits, teacher_logits, temperature)
    if beta == 1.0:
        return reverse_kl_per_token(student_logits, teacher_logits, temperature)
    student_logprobs, teacher_logprobs = _logprobs(student_logits, teacher_logits, temperature)
    mixture = log_mixture(teacher_logprobs, student_logprobs, beta)  # log(beta p_t + (1-beta) p_s)
    return beta * kl_rows(teacher_logprobs, mixture) + (1.0 - beta) * kl_rows(student_logprobs, mixture)


def skew_kl_per_token(student_logits, teacher_logits, temperature: float, skew_alpha: float) -> torch.Tensor:
    """KL(p_t || a p_t + (1 - a) p_s) per row (DistiLLM skew KL); a = 0 is forward KL."""
    student_logprobs, teacher_logprobs = _logprobs(student_logits, teacher_logits, temperature)
    if skew_alpha == 0.0:
        return kl_rows(teacher_logprobs, student_logprobs)
    return kl_rows(teacher_logprobs, log_mixture(teacher_logprobs, student_logprobs, skew_alpha))


def skew_reverse_kl_per_token(student_logits, teacher_logits, temperature: float, skew_alpha: float) -> torch.Tensor:
    """KL(p_s || a p_s + (1 - a) p_t) per row (DistiLLM skew reverse KL); a = 0 is reverse KL."""
    student_logprobs, teacher_logprobs = _logprobs(student_logits, teacher_logits, temperature)
    if skew_alpha == 0.0:
        return kl_rows(student_logprobs, teacher_logprobs)
    return kl_rows(student_logprobs, log_mixture(student_logprobs, teacher_logprobs, skew_alpha))


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, accurate near both ends (Maechler, 2012)."""
    x = x.clamp(max=0.0)
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def sparse_forward_kl_per_token(student_logits, topk_ids, topk_logprobs, temperature: float) -> torch.Tensor:
    """KL over (k cached tokens + tail) buckets, see the module docstring.

    student_logits: (N, V); topk_ids: (N, k) int64; topk_logprobs: (N, k), the teacher's
    log-probabilities at temperature T. Returns (N,). The student's tail mass is summed
    from its own log-probs outside the k ids (exact, finite gradients even when the
    student puts nearly all its mass on the k tokens).
    """
    student_logprobs = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (N, V)
    student_top = student_logprobs.gather(-1, topk_ids).clamp(min=LOGPROB_FLOOR)  # (N, k)
    outside = student_logprobs.scatter(-1, topk_ids, LOGPROB_FLOOR)  # (N, V), the k ids pushed to ~0 mass
    student_tail = torch.logsumexp(outside, dim=-1, keepdim=True).clamp(min=LOGPROB_FLOOR)  # (N, 1)
    teacher_top = topk_logprobs.float().clamp(min=LOGPROB_FLOOR)  # (N, k)
    teacher_tail = log1mexp(torch.logsumexp(teacher_top, dim=-1, keepdim=True)).clamp(min=LOGPROB_FLOOR)  # (N, 1)
    return kl_rows(torch.cat([teacher_top, teacher_tail], -1), torch.cat([student_top, student_tail], -1))


@dataclass(frozen=True)
class Divergence:
    """A KD divergence: per-row function (student (N, V), teacher (N, V), T, **params) -> (N,)."""

    per_token: Callable[..., torch.Tensor]
    params: tuple[str, ...] = ()


# Registry of KD divergences; `distill.objective` names one of these.
KD_OBJECTIVES: dict[str, Divergence] = {
    "forward_kl": Divergence(forward_kl_per_token),
    "reverse_kl": Divergence(reverse_kl_per_token),
    "jsd": Divergence(jsd_per_token, ("beta",)),
    "skew_kl": Divergence(skew_kl_per_token, ("skew_alpha",)),
    "skew_reverse_kl": Divergence(skew_reverse_kl_per_token, ("skew_alpha",)),
}


def kd_per_token(objective: str, student_logits, teacher_logits, temperature: float, **params) -> torch.Tensor:
    """The named divergence per row, given only the parameters it declares."""
    divergence = KD_OBJECTIVES[objective]
    return divergence.per_token(student_logits, teacher_logits, temperature, **{k: params[k] for k in divergence.params})


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
    objective: str = "forward_kl",
    beta: float = 0.5,
    skew_alpha: float = 0.1,
    scale_by_t2: bool = True,
    num_tokens: int | torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``alpha * KD + (1 - alpha) * CE``, normalized by non-ignored tokens.

    student_logits, teacher_logits: (N, V) (flattened positions); labels: (N,) with
    ``ignore_index`` for positions that carry no target. Returns (loss, {"kd", "ce"}) where
    the parts are the unweighted, normalized terms (kd includes T^2 when scaled).
    """
    kd_rows = kd_per_token(objective, student_logits, teacher_logits, temperature, beta=beta, skew_alpha=skew_alpha)
    return mix_with_ce(kd_rows, student_logits, labels, alpha=alpha, temperature=temperature, scale_by_t2=scale_by_t2,
                       num_tokens=num_tokens, ignore_index=ignore_index)


def sparse_distillation_loss(
    student_logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
    scale_by_t2: bool = True,
    num_tokens: int | torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`distillation_loss` with a sparse top-k teacher and forward KL (see above)."""
    kd_rows = sparse_forward_kl_per_token(student_logits, topk_ids, topk_logprobs, temperature)
    return mix_with_ce(kd_rows, student_logits, labels, alpha=alpha, temperature=temperature, scale_by_t2=scale_by_t2,
                       num_tokens=num_tokens, ignore_index=ignore_index)


def mix_with_ce(kd_rows, student_logits, labels, *, alpha, temperature, scale_by_t2, num_tokens, ignore_index):
    """Mask and normalize per-row KD values, add CE: the shared tail of both losses above."""
    mask = labels != ignore_index  # (N,)
    denominator = (mask.sum() if num_tokens is None else torch.as_tensor(num_tokens)).clamp(min=1).float()
    kd = torch.where(mask, kd_rows, torch.zeros_like(kd_rows)).sum() / denominator
    if scale_by_t2:
        kd = kd * temperature**2
    ce = F.cross_entropy(student_logits.float(), labels, ignore_index=ignore_index, reduction="sum") / denominator
    return alpha * kd + (1.0 - alpha) * ce, {"kd": kd.detach(), "ce": ce.detach()}
