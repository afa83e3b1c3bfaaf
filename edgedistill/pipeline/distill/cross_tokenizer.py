"""Cross-tokenizer logit distillation: a teacher and a student that split text differently.

Neither side's logits can be compared column by column, nor position by position. The
text is the common ground:

1. **Alignment** (GOLD, TRL's ``ULDLoss._align_by_byte_offsets``): each window of student
   tokens is decoded, the text re-tokenized by the teacher (with its BOS where its
   tokenizer adds one), and both token sequences are walked by their character end
   offsets; whenever both sides end a token at the same character, a *group* closes: a
   run of student tokens and a run of teacher tokens spelling the same text (1:1 for
   most words; n:m where the tokenizers cut differently).
2. **Merge** ("observed", TRL's default): a group's distribution is the next-token
   distribution at the position predicting its first token, times the probability of
   each further token of the group (the chain rule over the run, unnormalized):
   ``P[g] = p[first] * prod_{r in rest(g)} p[r, token(r + 1)]``, in log space.
3. **Objectives** on the merged distributions, at temperature T (both sides, no T^2
   factor: these are not KL terms):

   * ``uld`` (Boizard et al., 2024): sum_i |sort(P_s)[i] - sort(P_t)[i]|, both sorted
     descending, the shorter vocabulary padded with zeros (the Wasserstein-1 distance
     between the sorted distributions; no vocabulary mapping);
   * ``gold`` (GOLD's hybrid loss): tokens whose decoded text is the same in both
     vocabularies (each text unique on both sides) are compared column to column with
     generalized JSD(beta) on the unnormalized merged probabilities (log clamped at 1e-8,
     as TRL), the rest with ``uld`` on the sorted remainders; weighted w_m = matched /
     teacher vocabulary, w_u = 1 - w_m (TRL's adaptive weights). TRL matches raw token
     strings; decoded texts match across byte-level and SentencePiece vocabularies
     ("Ġthe" vs "▁the" are both " the"), which raw strings would not.

Normalization: a group's term is counted once, on the student row predicting its first
token, and the KD sum is divided by ``num_tokens`` (the step's student target tokens)
like every other objective here; total = alpha * KD + (1 - alpha) * CE (student, T = 1).

Memory: the fused path (:func:`cross_tokenizer_loss`) runs one window at a time, so the
largest buffers are one window's (L, V_student) and (L_teacher, V_teacher) logits; no
(N, V_teacher) x (N, V_student) buffer exists. Groups never cross windows, so each
window's gradient is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from edgedistill.pipeline.distill.losses import IGNORE_INDEX, LOGPROB_FLOOR
from edgedistill.registry_names import CROSS_OBJECTIVES
_PROB_LOG_FLOOR = float(np.log(1e-8))  # TRL's clamp of the hybrid JSD's probabilities


def end_offsets(tokenizer, ids: list[int]) -> list[int]:
    """Character offset (in the decoded text of ``ids``) at which each token ends; special
    tokens (BOS, EOS) add no text. Cumulative decoding handles SentencePiece's leading
    space and byte-fallback pieces; a character split across tokens ends at its last one."""
    special = set(tokenizer.all_special_ids)
    ends, text_ids = [], []
    for token in ids:
        if token not in special:
            text_ids.append(token)
        ends.append(len(tokenizer.decode(text_ids, clean_up_tokenization_spaces=False)) if text_ids else 0)
    return ends


def align_groups(student_ends: list[int], teacher_ends: list[int]) -> list[tuple[list[int], list[int]]]:
    """Groups of (student token indices, teacher token indices) spelling the same text,
    closed wherever both sequences end a token at the same offset; tokens adding no text
    (specials, or partial characters) join no group. Both ``*_ends`` are non-decreasing."""
    groups, s_run, t_run = [], [], []
    i = j = 0
    s_prev = t_prev = 0
    while i < len(student_ends) or j < len(teacher_ends):
        if i < len(student_ends) and student_ends[i] == s_prev and not s_run:  # no text of its own: skip
            i += 1
            continue
        if j < len(teacher_ends) and teacher_ends[j] == t_prev and not t_run:
            j += 1
            continue
        if j >= len(teacher_ends) or (i < len(student_ends) and student_ends[i] <= teacher_ends[j]):
            s_run.append(i)
            s_prev = student_ends[i]
            i += 1
        else:
            t_run.append(j)
            t_prev = teacher_ends[j]
            j += 1
        if s_run and t_run and s_prev == t_prev:
            groups.append((s_run, t_run))
            s_run, t_run = [], []
    return groups


@dataclass
class WindowAlignment:
    """One student window's teacher tokens and groups, as row indices of each side's
    next-token predictions (row r predicts token r + 1)."""

    teacher_ids: torch.Tensor  # (Lt,) int64
    s_first: torch.Tensor  # (G,) student row predicting each group's first token
    t_first: torch.Tensor  # (G,)
    s_rest: torch.Tensor  # (Rs,) student rows whose actual next token extends a group
    s_rest_group: torch.Tensor  # (Rs,) the group each belongs to
    t_rest: torch.Tensor
    t_rest_group: torch.Tensor
    one_to_one: int  # groups of one student and one teacher token
    student_tokens: int  # student target tokens the groups cover


def align_window(student_ids: list[int], student_targets: list[bool], student_tokenizer, teacher_tokenizer,
                 teacher_bos: int | None) -> WindowAlignment:
    """Re-tokenize a student window's text for the teacher and align the two. Groups whose
    first student token is no target (a prompt) or has no predicting row are dropped."""
    student_ends = end_offsets(student_tokenizer, student_ids)
    special = set(student_tokenizer.all_special_ids)
    text = student_tokenizer.decode([t for t in student_ids if t not in special], clean_up_tokenization_spaces=False)
    teacher_ids = teacher_tokenizer(text, add_special_tokens=False)["input_ids"]
    if teacher_bos is not None:
        teacher_ids = [teacher_bos, *teacher_ids]
    teacher_ends = end_offsets(teacher_tokenizer, teacher_ids)
    firsts, rests = ([], []), ([], [], [], [])
    one_to_one = covered = 0
    for s_run, t_run in align_groups(student_ends, teacher_ends):
        if s_run[0] == 0 or t_run[0] == 0 or not student_targets[s_run[0]]:
            continue
        group = len(firsts[0])
        firsts[0].append(s_run[0] - 1)
        firsts[1].append(t_run[0] - 1)
        rests[0].extend(r - 1 for r in s_run[1:])
        rests[1].extend([group] * (len(s_run) - 1))
        rests[2].extend(r - 1 for r in t_run[1:])
        rests[3].extend([group] * (len(t_run) - 1))
        one_to_one += len(s_run) == len(t_run) == 1
        covered += len(s_run)
    as_long = lambda values: torch.tensor(values, dtype=torch.long)  # noqa: E731
    return WindowAlignment(as_long(teacher_ids), as_long(firsts[0]), as_long(firsts[1]), as_long(rests[0]),
                           as_long(rests[1]), as_long(rests[2]), as_long(rests[3]), one_to_one, covered)


class VocabMatch:
    """Token ids whose decoded text is the same, and unique, in both vocabularies:
    ``teacher_ids[i]`` and ``student_ids[i]`` name the same text."""

    def __init__(self, teacher_tokenizer, student_tokenizer):
        teacher, student = _unique_texts(teacher_tokenizer), _unique_texts(student_tokenizer)
        shared = sorted(set(teacher) & set(student), key=lambda text: teacher[text])
        self.teacher_ids = torch.tensor([teacher[t] for t in shared], dtype=torch.long)
        self.student_ids = torch.tensor([student[t] for t in shared], dtype=torch.long)
        self.teacher_vocab = len(teacher_tokenizer)

    @property
    def matched(self) -> int:
        return int(self.teacher_ids.numel())


def _unique_texts(tokenizer) -> dict[str, int]:
    special = set(tokenizer.all_special_ids)
    seen: dict[str, int] = {}
    clashes: set[str] = set()
    for token in range(len(tokenizer)):
        if token in special:
            continue
        text = tokenizer.decode([token], clean_up_tokenization_spaces=False)
        if text in seen or "\ufffd" in text or not text:
            clashes.add(text)
        seen.setdefault(text, token)
    return {text: token for text, token in seen.items() if text not in clashes}


# --- the plain reference ------------------------------------------------------------------
def merged_logprobs(logprobs: torch.Tensor, labels: torch.Tensor, first: torch.Tensor, rest: torch.Tensor,
                    rest_group: torch.Tensor) -> torch.Tensor:
    """log P[g] = logprobs[first[g]] + sum of logprobs[r, labels[r]] over the group's rest
    rows r. logprobs: (R, V); labels: (R,) the actual next tokens. Returns (G, V)."""
    extra = torch.zeros(first.numel(), dtype=logprobs.dtype, device=logprobs.device)
    if rest.numel():
        extra = extra.index_add(0, rest_group, logprobs[rest, labels[rest]])
    return logprobs[first] + extra[:, None]


def sorted_l1(student_probs: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """sum_i |sort(p_s)[i] - sort(p_t)[i]| per row, both sorted descending, the narrower
    padded with zeros. (G, Vs), (G, Vt) -> (G,)."""
    s = student_probs.sort(dim=-1, descending=True).values
    t = teacher_probs.sort(dim=-1, descending=True).values
    width = max(s.shape[-1], t.shape[-1])
    s, t = F.pad(s, (0, width - s.shape[-1])), F.pad(t, (0, width - t.shape[-1]))
    return (s - t).abs().sum(dim=-1)


def _kl_probs(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    return (p_log.exp() * (p_log - q_log)).sum(dim=-1)


def generalized_jsd_probs(student_log: torch.Tensor, teacher_log: torch.Tensor, beta: float) -> torch.Tensor:
    """GKD's JSD(beta) on (possibly unnormalized) log-probabilities, per row; beta = 0 / 1
    are forward / reverse KL, as in ``losses.jsd_per_token``."""
    if beta == 0.0:
        return _kl_probs(teacher_log, student_log)
    if beta == 1.0:
        return _kl_probs(student_log, teacher_log)
    mixture = torch.logaddexp(teacher_log + np.log(beta), student_log + np.log1p(-beta))
    return beta * _kl_probs(teacher_log, mixture) + (1 - beta) * _kl_probs(student_log, mixture)


def group_divergence(objective: str, student_log: torch.Tensor, teacher_log: torch.Tensor, match: VocabMatch | None,
                     beta: float) -> torch.Tensor:
    """The per-group term of ``objective`` from merged log-distributions (G, Vs), (G, Vt)."""
    if objective == "uld":
        return sorted_l1(student_log.exp(), teacher_log.exp())
    if match is None:
        raise ValueError("objective gold needs the vocabulary match")
    s_matched = student_log[:, match.student_ids].clamp(min=_PROB_LOG_FLOOR)
    t_matched = teacher_log[:, match.teacher_ids].clamp(min=_PROB_LOG_FLOOR)
    s_rest = _drop_columns(student_log, match.student_ids).exp()
    t_rest = _drop_columns(teacher_log, match.teacher_ids).exp()
    w_matched = match.matched / match.teacher_vocab
    return w_matched * generalized_jsd_probs(s_matched, t_matched, beta) + (1 - w_matched) * sorted_l1(s_rest, t_rest)


def _drop_columns(values: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    keep = torch.ones(values.shape[-1], dtype=torch.bool, device=values.device)
    keep[columns.to(values.device)] = False
    return values[:, keep]


def window_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, student_labels: torch.Tensor,
                alignment: WindowAlignment, *, objective: str, alpha: float, temperature: float, beta: float,
                match: VocabMatch | None, num_tokens, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """One window's ``(alpha * KD + (1 - alpha) * CE) / num_tokens``, the plain reference.

    student_logits: (L-1, Vs); teacher_logits: (Lt-1, Vt); student_labels: (L-1,) next
    tokens or ``ignore_index``."""
    device = student_logits.device
    s_log = F.log_softmax(student_logits.float() / temperature, dim=-1).clamp(min=LOGPROB_FLOOR)
    t_log = F.log_softmax(teacher_logits.float() / temperature, dim=-1).clamp(min=LOGPROB_FLOOR)
    s_next = student_labels.clamp(min=0)
    t_next = alignment.teacher_ids[1:].to(device)
    a = alignment
    s_group = merged_logprobs(s_log, s_next, a.s_first.to(device), a.s_rest.to(device), a.s_rest_group.to(device))
    t_group = merged_logprobs(t_log, t_next, a.t_first.to(device), a.t_rest.to(device), a.t_rest_group.to(device))
    denominator = torch.as_tensor(num_tokens, dtype=torch.float32, device=device).clamp(min=1)
    kd = group_divergence(objective, s_group, t_group, match, beta).sum() / denominator
    ce = F.cross_entropy(student_logits.float(), student_labels, ignore_index=ignore_index, reduction="sum") / denominator
    return alpha * kd + (1 - alpha) * ce


# --- the fused path: one window at a time -----------------------------------------------------
class _CrossTokenizerFunction(torch.autograd.Function):
    """Loss over windows, each formed from hidden states and lm_heads and freed before the
    next; gradients for the student hidden states and lm_head computed in forward."""

    @staticmethod
    def forward(ctx, student_hidden, student_weight, teacher_hidden, teacher_weight, labels, alignments, settings,
                match, num_tokens):
        windows = len(alignments)
        rows = student_hidden.shape[0] // windows
        grad_hidden = torch.zeros_like(student_hidden)
        grad_weight = torch.zeros(student_weight.shape, dtype=torch.float32, device=student_weight.device)
        total = torch.zeros((), dtype=torch.float32, device=student_hidden.device)
        for w, alignment in enumerate(alignments):
            t_rows = alignment.teacher_ids.numel() - 1
            with torch.no_grad():
                teacher_logits = (teacher_hidden[w, :t_rows] @ teacher_weight.T).float()
            with torch.enable_grad():
                hidden = student_hidden[w * rows:(w + 1) * rows].detach().float().requires_grad_(True)
                weight = student_weight.detach().float().requires_grad_(True)
                loss = window_loss(hidden @ weight.T, teacher_logits, labels[w * rows:(w + 1) * rows], alignment,
                                   match=match, num_tokens=num_tokens, **settings)
                g_hidden, g_weight = torch.autograd.grad(loss, (hidden, weight))
            total += loss.detach()
            grad_hidden[w * rows:(w + 1) * rows] = g_hidden.to(grad_hidden.dtype)
            grad_weight += g_weight
            del teacher_logits, g_weight
        ctx.save_for_backward(grad_hidden, grad_weight.to(student_weight.dtype))
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_output, grad_weight * grad_output, None, None, None, None, None, None, None


def cross_tokenizer_loss(student_hidden: torch.Tensor, student_weight: torch.Tensor, teacher_hidden: torch.Tensor,
                         teacher_weight: torch.Tensor, labels: torch.Tensor, alignments: list[WindowAlignment], *,
                         objective: str, alpha: float, temperature: float, beta: float = 0.5,
                         match: VocabMatch | None = None, num_tokens=None) -> torch.Tensor:
    """Sum of :func:`window_loss` over B windows without (N, V) buffers.

    student_hidden: (B * (L-1), Hs) rows window by window; student_weight: (Vs, Hs);
    teacher_hidden: (B, Lt_max, Ht) final hidden states over each window's teacher ids
    (right-padded); teacher_weight: (Vt, Ht); labels: (B * (L-1),)."""
    if objective not in CROSS_OBJECTIVES:
        raise ValueError(f"cross-tokenizer objective must be one of {', '.join(CROSS_OBJECTIVES)}, not '{objective}'")
    if num_tokens is None:
        num_tokens = (labels != IGNORE_INDEX).sum()
    settings = {"objective": objective, "alpha": alpha, "temperature": temperature, "beta": beta}
    return _CrossTokenizerFunction.apply(student_hidden, student_weight, teacher_hidden, teacher_weight, labels,
                                         alignments, settings, match, num_tokens)

