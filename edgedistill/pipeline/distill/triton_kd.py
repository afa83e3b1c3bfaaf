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

TRITON_OBJECTIVES = {"forward_kl": 0, "reverse_kl": 1}


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
            new_max = tl.maximum(max_p, tl.max(s * inv_temperature))
            sum_p = sum_p * tl.exp(max_p - new_max) + tl.sum(tl.exp(s * inv_temperature - new_max))
            max_p = new_max
            new_max = tl.maximum(max_q, tl.max(t * inv_temperature))
            sum_q = sum_q * tl.exp(max_q - new_max) + tl.sum(tl.exp(t * inv_temperature - new_max))
            max_q = new_max
            new_max = tl.maximum(max_c, tl.max(s))
            sum_c = sum_c * tl.exp(max_c - new_max) + tl.sum(tl.exp(s - new_max))
            max_c = new_max
        lse_p, lse_q, lse_c = max_p + tl.log(sum_p), max_q + tl.log(sum_q), max_c + tl.log(sum_c)
        label_logit = tl.load(student_row + label).to(tl.float32)  # before the buffer turns into gradients
        # pass 2: the divergence (and, for forward KL, the gradient)
        kl = 0.0
        for start in range(0, vocab, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < vocab
            s = tl.load(student_row + cols, mask=mask, other=0.0).to(tl.float32)
            t = tl.load(teacher_row + cols, mask=mask, other=0.0).to(tl.float32)
            log_p = s * inv_temperature - lse_p
            log_q = t * inv_temperature - lse_q
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
                s = tl.load(student_row + cols, mask=mask, other=0.0).to(tl.float32)
                t = tl.load(teacher_row + cols, mask=mask, other=0.0).to(tl.float32)
                log_p = s * inv_temperature - lse_p
                log_q = t * inv_temperature - lse_q
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
