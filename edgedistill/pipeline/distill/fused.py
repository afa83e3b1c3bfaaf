"""Fused linear distillation loss: lm_head matmul + divergence + CE, chunked over rows.

Input: student hidden states (N, Hs) and lm_head weight (V, Hs) (+ bias), and the teacher
as hidden states (N, Ht) with its lm_head (V, Ht) (+ bias), or as logits (N, V). Rows are
processed ``chunk_size`` at a time: the chunk's logits are formed, the loss and its
gradient w.r.t. those logits are computed (the plain reference ``distillation_loss``,
differentiated per chunk), the gradient is folded into d(hidden) and d(lm_head), and the
chunk's logits are freed. Peak extra memory is O(chunk x V) instead of O(N x V); the
loss and gradients equal the reference's, which normalizes by the non-ignored tokens of
the whole call (or ``num_tokens``) exactly as here.

Layers (STYLE.md rule 7): per-chunk math (``chunk_loss_and_grad`` in torch, or the
Triton kernel in ``triton_kd.py``) -> ``run_chunks`` (the launcher loop; device dispatch
via ``pick_backend``) -> ``FusedLinearKDFunction`` (autograd) ->
``fused_linear_distillation_loss`` / ``FusedLinearDistillationLoss`` (API).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgedistill.pipeline.distill.losses import IGNORE_INDEX, distillation_loss, sparse_distillation_loss

DEFAULT_CHUNK_BUDGET_BYTES = 256 << 20
# On a GPU the Triton kernel runs one program per row: a 256 MiB chunk (~150 rows at a
# 152k vocab) leaves most SMs idle, so CUDA chunks get a larger budget.
CUDA_CHUNK_BUDGET_BYTES = 1 << 30
# fp32 (C, V) buffers alive at once per chunk, measured: torch autograd holds logits,
# teacher logits, log-softmaxes, probabilities, mixtures and the gradient (JSD is the
# largest at ~12.5); the Triton kernel only the two logit buffers (grad overwrites one).
ROW_BUFFERS = {"torch": 13, "triton": 3}


@dataclass(frozen=True)
class KDSettings:
    """The loss definition (see losses.py for the exact conventions)."""

    alpha: float = 0.5
    temperature: float = 1.0
    objective: str = "forward_kl"
    beta: float = 0.5
    skew_alpha: float = 0.1
    scale_by_t2: bool = True
    ignore_index: int = IGNORE_INDEX


def auto_chunk_size(rows: int, vocab: int, hidden: int, backend: str = "torch",
                    budget_bytes: int | None = None, device_type: str = "cpu") -> int:
    """Rows per chunk so one chunk's fp32 buffers ((C, V) logits work, (C, H) hidden copies)
    stay within ``budget_bytes`` (default: 256 MiB on CPU, 1 GiB on CUDA)."""
    if budget_bytes is None:
        budget_bytes = CUDA_CHUNK_BUDGET_BYTES if device_type == "cuda" else DEFAULT_CHUNK_BUDGET_BYTES
    per_row = 4 * (vocab * ROW_BUFFERS[backend] + 2 * hidden)
    return max(1, min(rows, budget_bytes // per_row))


def chunk_loss_and_grad(student_logits, teacher_chunk, labels, settings: KDSettings, num_tokens):
    """Loss of one chunk (already divided by the call's ``num_tokens``) and d loss / d logits.

    student_logits: (C, V) fp32; teacher_chunk: ("logits", (C, V)), ("topk", ids (C, k),
    logprobs (C, k)) or ("none",) (alpha 0: no teacher); labels: (C,). Returns (scalar, (C, V)).
    """
    common = dict(alpha=settings.alpha, temperature=settings.temperature, scale_by_t2=settings.scale_by_t2,
                  num_tokens=num_tokens, ignore_index=settings.ignore_index)
    with torch.enable_grad():
        logits = student_logits.detach().requires_grad_(True)
        if teacher_chunk[0] == "none":  # alpha 0: cross-entropy alone, the same normalization
            loss = torch.nn.functional.cross_entropy(logits, labels, ignore_index=settings.ignore_index,
                                                     reduction="sum") / num_tokens
        elif teacher_chunk[0] == "topk":
            loss, _ = sparse_distillation_loss(logits, teacher_chunk[1], teacher_chunk[2], labels, **common)
        else:
            loss, _ = distillation_loss(logits, teacher_chunk[1], labels, objective=settings.objective,
                                        beta=settings.beta, skew_alpha=settings.skew_alpha, **common)
        (grad_logits,) = torch.autograd.grad(loss, logits)
    return loss.detach(), grad_logits


def _triton_chunk(student_logits, teacher_chunk, labels, settings, num_tokens):
    from edgedistill.pipeline.distill.triton_kd import kd_loss_and_grad_triton

    return kd_loss_and_grad_triton(student_logits, teacher_chunk[1], labels, settings, 1.0 / max(float(num_tokens), 1.0))


# Per-chunk loss+gradient implementations; the launcher below picks one per call.
CHUNK_BACKENDS = {"torch": chunk_loss_and_grad, "triton": _triton_chunk}
TRITON_OBJECTIVES = ("forward_kl", "reverse_kl")  # the divergences the Triton kernel implements


def pick_backend(requested: str, device: torch.device, objective: str, sparse_teacher: bool = False) -> str:
    """"auto": Triton on CUDA for the dense objectives it implements, chunked torch otherwise."""
    kernel_fits = objective in TRITON_OBJECTIVES and not sparse_teacher
    if requested == "auto":
        return "triton" if device.type == "cuda" and kernel_fits else "torch"
    if requested not in CHUNK_BACKENDS:
        raise ValueError(f"unknown backend '{requested}'; available: auto, {', '.join(CHUNK_BACKENDS)}")
    if requested == "triton" and not kernel_fits:
        raise ValueError(f"the Triton kernel implements {', '.join(TRITON_OBJECTIVES)} with a dense teacher, not "
                         f"'{objective}'{' with a top-k teacher' if sparse_teacher else ''}")
    return requested


def _teacher_chunk(teacher: tuple, start: int, end: int) -> tuple:
    """Rows [start, end) of the teacher as ("logits", (C, V) fp32), ("topk", ids, logprobs) or ("none",)."""
    if teacher[0] == "none":
        return teacher
    if teacher[0] == "topk":
        return ("topk", teacher[1][start:end], teacher[2][start:end])
    if teacher[0] == "logits":
        return ("logits", teacher[1][start:end].float())
    return ("logits", _logits(teacher[1][start:end], teacher[2], teacher[3]))


def _logits(hidden, weight, bias):
    logits = hidden @ weight.T  # (C, V) in the input dtype
    if bias is not None:
        logits = logits + bias
    return logits.float()  # upcast per chunk


def run_chunks(student_hidden, student_weight, student_bias, teacher, labels, settings, num_tokens, chunk_size,
               backend="auto"):
    """Loss and gradients for hidden, weight, bias, one chunk of rows at a time.

    teacher: ("logits", (N, V)), ("linear", hidden (N, Ht), weight (V, Ht), bias | None),
    ("topk", ids (N, k), logprobs (N, k)) or ("none",) (alpha 0: cross-entropy alone).
    """
    backend = pick_backend(backend, student_hidden.device, settings.objective, teacher[0] in ("topk", "none"))
    chunk_fn = CHUNK_BACKENDS[backend]
    if backend == "triton":
        num_tokens = float(num_tokens)  # one host read per call, none per chunk
    rows, vocab = student_hidden.shape[0], student_weight.shape[0]
    chunk_size = chunk_size or auto_chunk_size(rows, vocab, student_hidden.shape[1], backend,
                                               device_type=student_hidden.device.type)
    device = student_weight.device
    grad_hidden = torch.zeros_like(student_hidden) if student_hidden.requires_grad else None
    grad_weight = torch.zeros(student_weight.shape, dtype=torch.float32, device=device) if student_weight.requires_grad else None
    grad_bias = None
    if student_bias is not None and student_bias.requires_grad:
        grad_bias = torch.zeros(vocab, dtype=torch.float32, device=device)
    total = torch.zeros((), dtype=torch.float32, device=student_hidden.device)
    for start in range(0, rows, chunk_size):
        end = min(start + chunk_size, rows)
        hidden = student_hidden[start:end]  # (C, Hs)
        with torch.no_grad():
            teacher_chunk = _teacher_chunk(teacher, start, end)
            student_logits = _logits(hidden, student_weight, student_bias)  # (C, V)
        loss, grad_logits = chunk_fn(student_logits, teacher_chunk, labels[start:end], settings, num_tokens)
        total += loss
        # Both gradient matmuls run in the weights' dtype (bf16 tensor cores under bf16;
        # fp32 stays fp32); d(lm_head) is accumulated across chunks in fp32.
        grad_logits_lowp = grad_logits.to(student_weight.dtype)
        if grad_hidden is not None:
            grad_hidden[start:end] = (grad_logits_lowp @ student_weight).to(grad_hidden.dtype)  # (C, Hs)
        if grad_weight is not None and student_weight.dtype == torch.float32:
            grad_weight.addmm_(grad_logits.T, hidden.float())  # (V, Hs), in place: no second (V, Hs) buffer
        elif grad_weight is not None:
            grad_weight += grad_logits_lowp.T @ hidden.to(student_weight.dtype)  # (V, Hs) low-precision product
        if grad_bias is not None:
            grad_bias += grad_logits.sum(dim=0)
        del student_logits, teacher_chunk, grad_logits, grad_logits_lowp  # free the chunk before the next one
    return (total, grad_hidden, None if grad_weight is None else grad_weight.to(student_weight.dtype),
            None if grad_bias is None else grad_bias.to(student_bias.dtype))


class FusedLinearKDFunction(torch.autograd.Function):
    """Gradients are computed in forward (one pass over the logits) and scaled in backward.

    backward scales the saved gradients in place (no second lm_head-sized buffer), so the
    graph can be backpropagated once: ``retain_graph=True`` is not supported.
    """

    @staticmethod
    def forward(ctx, student_hidden, student_weight, student_bias, teacher, labels, settings, num_tokens, chunk_size,
                backend):
        loss, grad_hidden, grad_weight, grad_bias = run_chunks(
            student_hidden, student_weight, student_bias, teacher, labels, settings, num_tokens, chunk_size, backend
        )
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grads = list(ctx.saved_tensors)
        for grad in grads:
            if grad is not None:
                grad.mul_(grad_output.to(grad.dtype))
        return (*grads, None, None, None, None, None, None)


def fused_linear_distillation_loss(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    teacher_hidden: torch.Tensor | None = None,
    teacher_weight: torch.Tensor | None = None,
    teacher_logits: torch.Tensor | None = None,
    teacher_topk_ids: torch.Tensor | None = None,
    teacher_topk_logprobs: torch.Tensor | None = None,
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    settings: KDSettings = KDSettings(),
    num_tokens: int | torch.Tensor | None = None,
    chunk_size: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """``alpha * KD + (1 - alpha) * CE`` over N rows without materializing (N, V) logits.

    Give the teacher as ``teacher_hidden`` (N, Ht) + ``teacher_weight`` (V, Ht), as
    ``teacher_logits`` (N, V), or as a top-k cache ``teacher_topk_ids`` (N, k) +
    ``teacher_topk_logprobs`` (N, k) at the KD temperature (forward KL only; tail
    treatment in losses.py), or not at all when ``settings.alpha`` is 0 (the KD term has
    weight 0: the loss is the CE alone and no teacher is read). ``num_tokens``: normalizer for the optimizer step
    (defaults to this call's non-ignored labels). Equals ``distillation_loss`` on the
    materialized logits, in value and gradients. ``backend``: "auto" (Triton on CUDA,
    chunked torch elsewhere), "torch", or "triton" (on CPU only under TRITON_INTERPRET=1).
    """
    forms = {
        "linear": (teacher_hidden, teacher_weight, teacher_bias),
        "logits": (teacher_logits,),
        "topk": (teacher_topk_ids, teacher_topk_logprobs),
    }
    given = [kind for kind, parts in forms.items() if parts[0] is not None]
    if not given and settings.alpha == 0:
        teacher = ("none",)
    elif len(given) != 1 or any(part is None for part in forms[given[0]][:2]):
        raise ValueError("give the teacher as teacher_hidden + teacher_weight, as teacher_logits, "
                         "or as teacher_topk_ids + teacher_topk_logprobs (exactly one; none only with alpha 0)")
    else:
        teacher = (given[0], *forms[given[0]])
    if teacher[0] == "topk" and settings.objective != "forward_kl":
        raise ValueError(f"a top-k teacher supports objective forward_kl only, not '{settings.objective}'")
    check_shapes(student_hidden, student_weight, labels, teacher[0], teacher[1:], settings.ignore_index)
    if num_tokens is None:
        num_tokens = (labels != settings.ignore_index).sum()
    return FusedLinearKDFunction.apply(student_hidden, student_weight, student_bias, teacher, labels, settings,
                                       num_tokens, chunk_size, backend)


def check_shapes(student_hidden, student_weight, labels, teacher_kind: str, teacher_parts: tuple, ignore_index: int) -> None:
    """Fail with a clear ValueError before any kernel reads out of bounds.

    The label range check reads one boolean from the device once per call.
    """
    rows, vocab = student_hidden.shape[0], student_weight.shape[0]
    if student_hidden.shape[1] != student_weight.shape[1] or labels.shape != (rows,):
        raise ValueError(f"student hidden {tuple(student_hidden.shape)}, lm_head {tuple(student_weight.shape)} and "
                         f"labels {tuple(labels.shape)} do not fit (N, H), (V, H), (N,)")
    if teacher_kind != "none":
        _check_teacher_shapes(teacher_kind, teacher_parts, rows, vocab)
    if not bool((((labels >= 0) & (labels < vocab)) | (labels == ignore_index)).all()):
        raise ValueError(f"labels must be in [0, {vocab}) or ignore_index ({ignore_index})")


def _check_teacher_shapes(teacher_kind: str, teacher_parts: tuple, rows: int, vocab: int) -> None:
    first = teacher_parts[0]
    if first.shape[0] != rows:
        raise ValueError(f"the teacher has {first.shape[0]} rows, the student {rows}")
    if teacher_kind == "logits" and first.shape[1] != vocab:
        raise ValueError(f"teacher logits have {first.shape[1]} vocab columns, the student lm_head {vocab}; slice both to the shared vocab")
    if teacher_kind == "linear" and (teacher_parts[1].shape[0] != vocab or teacher_parts[1].shape[1] != first.shape[1]):
        raise ValueError(f"teacher lm_head {tuple(teacher_parts[1].shape)} does not fit vocab {vocab} and teacher hidden {first.shape[1]}")
    if teacher_kind == "topk" and teacher_parts[1].shape != first.shape:
        raise ValueError(f"top-k ids {tuple(first.shape)} and logprobs {tuple(teacher_parts[1].shape)} differ in shape")


class FusedLinearDistillationLoss(torch.nn.Module):
    """Module form of :func:`fused_linear_distillation_loss` with fixed settings."""

    def __init__(self, settings: KDSettings = KDSettings(), chunk_size: int | None = None, backend: str = "auto"):
        super().__init__()
        self.settings, self.chunk_size, self.backend = settings, chunk_size, backend

    def forward(self, student_hidden, student_weight, labels, **teacher) -> torch.Tensor:
        return fused_linear_distillation_loss(
            student_hidden, student_weight, labels, settings=self.settings, chunk_size=self.chunk_size,
            backend=self.backend, **teacher
        )
