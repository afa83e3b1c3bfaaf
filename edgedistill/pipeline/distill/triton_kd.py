"""Triton kernel: per-row KD + CE loss and d loss / d logits over the vocabulary.

One program per row. Pass 1 walks the vocabulary in blocks keeping online
(max, sum-exp) pairs for student/T, teacher/T and student/1 (the CE softmax), giving
three log-sum-exps without materializing a softmax. Pass 2 accumulates the divergence;
for reverse KL a third pass is needed because its gradient involves the row's KL.
The gradient overwrites the student-logits buffer (the caller no longer needs it).

Per row, with s = student logits, t = teacher logits, p = softmax(s/T), q = softmax(t/T),
c = softmax(s), y = label, k = T^2 if scaled else 1, n = tokens in the step:
  forward KL: loss = (alpha k KL(q||p) + (1-alpha)(lse(s) - s_y)) / n
              grad = (alpha k (p - q) / T + (1-alpha)(c - onehot(y))) / n
  reverse KL: loss = (alpha k KL(p||q) + ...) / n
              grad = (alpha k p (log p - log q - KL(p||q)) / T + (1-alpha)(c - onehot(y))) / n
Ignored rows get loss 0 and gradient 0. Same conventions as ``losses.py``.

Import this module only where Triton can run: on CUDA, or on CPU tensors with
``TRITON_INTERPRET=1`` set before the import (tests do this).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from edgedistill.pipeline.distill import losses

TRITON_OBJECTIVES = {"forward_kl": 0, "reverse_kl": 1}
# As in losses.py: -inf log-probs (masked vocab) become finite, probabilities stay 0.
LOGPROB_FLOOR = tl.constexpr(losses.LOGPROB_FLOOR)


@triton.jit
def _online_lse_step(running_max, running_sum, values):
    """One block of an online log-sum-exp; safe when everything so far is -inf."""
    new_max = tl.maximum(running_max, tl.max(values))
    shift = tl.where(new_max == -float("inf"), 0.0, new_max)
    running_sum = running_sum * tl.exp(running_max - shift) + tl.sum(tl.exp(values - shift))
    return new_max, running_sum


@triton.jit
def _block_logprobs(student_row, teacher_row, cols, mask, inv_temperature, lse_p, lse_q):
    """One vocab block: student logits s, and floored log p = s/T - lse_p, log q = t/T - lse_q."""
    s = tl.load(student_row + cols, mask=mask, other=0.0).to(tl.float32)
    t = tl.load(teacher_row + cols, mask=mask, other=0.0).to(tl.float32)
    log_p = tl.maximum(s * inv_temperature - lse_p, LOGPROB_FLOOR)
    log_q = tl.maximum(t * inv_temperature - lse_q, LOGPROB_FLOOR)
    return s, log_p, log_q


@triton.jit
def _kd_row_kernel(
    logits_ptr, teacher_ptr, labels_ptr, loss_ptr, stride_logits, stride_teacher, vocab,
    alpha, inv_temperature, kd_scale, inv_num_tokens, ignore_index,
    REVERSE: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    student_row = logits_ptr + row * stride_logits
    teacher_row = teacher_ptr + row * stride_teacher
    label = tl.load(labels_ptr + row)
    if label == ignore_index:
        for start in range(0, vocab, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            tl.store(student_row + cols, tl.zeros([BLOCK], dtype=tl.float32), mask=cols < vocab)
        tl.store(loss_ptr + row, 0.0)
    else:
        # pass 1: online log-sum-exp of s/T, t/T and s
        max_p, sum_p = -float("inf"), 0.0
        max_q, sum_q = -float("inf"), 0.0
        max_c, sum_c = -float("inf"), 0.0
        for start in range(0, vocab, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < vocab
            s = tl.load(student_row + cols, mask=mask, other=-float("inf")).to(tl.float32)
            t = tl.load(teacher_row + cols, mask=mask, other=-float("inf")).to(tl.float32)
            max_p, sum_p = _online_lse_step(max_p, sum_p, s * inv_temperature)
            max_q, sum_q = _online_lse_step(max_q, sum_q, t * inv_temperature)
            max_c, sum_c = _online_lse_step(max_c, sum_c, s)
        lse_p, lse_q, lse_c = max_p + tl.log(sum_p), max_q + tl.log(sum_q), max_c + tl.log(sum_c)
        label_logit = tl.load(student_row + label).to(tl.float32)  # before the buffer turns into gradients
        # pass 2: the divergence (and, for forward KL, the gradient)
        kl = 0.0
        for start in range(0, vocab, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < vocab
            s, log_p, log_q = _block_logprobs(student_row, teacher_row, cols, mask, inv_temperature, lse_p, lse_q)
            p, q = tl.exp(log_p), tl.exp(log_q)
            if REVERSE:
                kl += tl.sum(tl.where(mask & (p > 0), p * (log_p - log_q), 0.0))
            else:
                kl += tl.sum(tl.where(mask & (q > 0), q * (log_q - log_p), 0.0))
                ce_grad = tl.exp(s - lse_c) - tl.where(cols == label, 1.0, 0.0)
                grad = alpha * kd_scale * (p - q) * inv_temperature + (1.0 - alpha) * ce_grad
                tl.store(student_row + cols, grad * inv_num_tokens, mask=mask)
        if REVERSE:  # pass 3: the reverse-KL gradient needs the row's KL
            for start in range(0, vocab, BLOCK):
                cols = start + tl.arange(0, BLOCK)
                mask = cols < vocab
                s, log_p, log_q = _block_logprobs(student_row, teacher_row, cols, mask, inv_temperature, lse_p, lse_q)
                p = tl.exp(log_p)
                kd_grad = tl.where(p > 0, p * (log_p - log_q - kl), 0.0) * inv_temperature
                ce_grad = tl.exp(s - lse_c) - tl.where(cols == label, 1.0, 0.0)
                grad = alpha * kd_scale * kd_grad + (1.0 - alpha) * ce_grad
                tl.store(student_row + cols, grad * inv_num_tokens, mask=mask)
        loss = alpha * kd_scale * kl + (1.0 - alpha) * (lse_c - label_logit)
        tl.store(loss_ptr + row, loss * inv_num_tokens)


def kd_loss_and_grad_triton(student_logits, teacher_logits, labels, settings, inv_num_tokens: float, block: int = 1024):
    """Launcher: (C, V) fp32 student logits (overwritten with d loss / d logits), teacher
    logits (C, V), labels (C,) -> (loss of the chunk, gradient (C, V)).

    ``inv_num_tokens`` is a Python float (1 / tokens in the step), computed once per call
    so that no chunk waits on the device.
    """
    if settings.objective not in TRITON_OBJECTIVES:
        raise ValueError(f"no Triton kernel for '{settings.objective}'; kernels: {', '.join(TRITON_OBJECTIVES)}")
    rows, vocab = student_logits.shape
    student_logits = student_logits.contiguous()
    teacher_logits = teacher_logits.contiguous()
    losses = torch.empty(rows, dtype=torch.float32, device=student_logits.device)
    _kd_row_kernel[(rows,)](
        student_logits, teacher_logits, labels.contiguous(), losses, student_logits.stride(0), teacher_logits.stride(0),
        vocab, float(settings.alpha), 1.0 / settings.temperature,
        settings.temperature**2 if settings.scale_by_t2 else 1.0, inv_num_tokens, settings.ignore_index,
        REVERSE=TRITON_OBJECTIVES[settings.objective] == 1, BLOCK=min(block, triton.next_power_of_2(vocab)),
    )
    return losses.sum(), student_logits
