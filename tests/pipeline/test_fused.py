"""The chunked fused loss equals the plain reference in value and gradients."""

import itertools

import pytest
import torch

from edgedistill.pipeline.distill.fused import (
    FusedLinearDistillationLoss, KDSettings, auto_chunk_size, fused_linear_distillation_loss,
)
from edgedistill.pipeline.distill.losses import IGNORE_INDEX, KD_OBJECTIVES, distillation_loss

ROWS, VOCAB, STUDENT_WIDTH, TEACHER_WIDTH = 3 * 47, 1271, 24, 40


def make_inputs(with_bias: bool, ignored_rows: int = 13):
    student_hidden = torch.randn(ROWS, STUDENT_WIDTH, requires_grad=True)
    student_weight = (torch.randn(VOCAB, STUDENT_WIDTH) / 4).requires_grad_(True)
    student_bias = torch.randn(VOCAB, requires_grad=True) if with_bias else None
    teacher_hidden, teacher_weight = torch.randn(ROWS, TEACHER_WIDTH), torch.randn(VOCAB, TEACHER_WIDTH) / 3
    labels = torch.randint(0, VOCAB, (ROWS,))
    labels[torch.randperm(ROWS)[:ignored_rows]] = IGNORE_INDEX
    return student_hidden, student_weight, student_bias, teacher_hidden, teacher_weight, labels


def reference(student_hidden, student_weight, student_bias, teacher_logits, labels, settings, grad_output):
    logits = student_hidden @ student_weight.T + (0 if student_bias is None else student_bias)  # (N, V)
    loss, _ = distillation_loss(
        logits, teacher_logits, labels, alpha=settings.alpha, temperature=settings.temperature,
        objective=settings.objective, beta=settings.beta, skew_alpha=settings.skew_alpha,
        scale_by_t2=settings.scale_by_t2, ignore_index=settings.ignore_index,
    )
    (loss * grad_output).backward()
    return loss.detach()


def leaves(tensors):
    return [t for t in tensors if t is not None]


def check_against_reference(settings, *, with_bias=True, chunk_size=29, grad_output=2.5, teacher_as_logits=False):
    student_hidden, student_weight, student_bias, teacher_hidden, teacher_weight, labels = make_inputs(with_bias)
    teacher_logits = teacher_hidden @ teacher_weight.T  # (N, V)
    expected = reference(student_hidden, student_weight, student_bias, teacher_logits, labels, settings, grad_output)
    expected_grads = [t.grad.clone() for t in leaves([student_hidden, student_weight, student_bias])]
    for t in leaves([student_hidden, student_weight, student_bias]):
        t.grad = None

    teacher = {"teacher_logits": teacher_logits} if teacher_as_logits else {"teacher_hidden": teacher_hidden, "teacher_weight": teacher_weight}
    loss = fused_linear_distillation_loss(
        student_hidden, student_weight, labels, student_bias=student_bias, settings=settings, chunk_size=chunk_size, **teacher
    )
    (loss * grad_output).backward()

    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
    for got, want in zip([t.grad for t in leaves([student_hidden, student_weight, student_bias])], expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("objective", "temperature"), list(itertools.product(sorted(KD_OBJECTIVES), [0.5, 1.0, 2.0])))
def test_every_objective_and_temperature(objective, temperature):
    check_against_reference(KDSettings(alpha=0.7, temperature=temperature, objective=objective, beta=0.4, skew_alpha=0.2))


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_jsd_betas_with_teacher_logits_and_no_bias(beta):
    check_against_reference(KDSettings(alpha=0.5, temperature=2.0, objective="jsd", beta=beta), with_bias=False,
                            teacher_as_logits=True)


@pytest.mark.parametrize("chunk_size", [1, 47, 500, None])
def test_chunk_size_does_not_change_the_result(chunk_size):
    check_against_reference(KDSettings(alpha=0.3, temperature=1.0, scale_by_t2=False), chunk_size=chunk_size, grad_output=1.0)


def test_all_masked_batch_gives_zero_loss_and_zero_grads():
    student_hidden, student_weight, _, teacher_hidden, teacher_weight, labels = make_inputs(False, ignored_rows=ROWS)

    loss = FusedLinearDistillationLoss(KDSettings(alpha=0.5, temperature=2.0), chunk_size=50)(
        student_hidden, student_weight, labels, teacher_hidden=teacher_hidden, teacher_weight=teacher_weight
    )
    loss.backward()

    assert loss.item() == 0.0
    assert torch.count_nonzero(student_hidden.grad) == 0 and torch.count_nonzero(student_weight.grad) == 0


def test_step_normalization_uses_num_tokens():
    student_hidden, student_weight, _, teacher_hidden, teacher_weight, labels = make_inputs(False)
    kept = int((labels != IGNORE_INDEX).sum())
    teacher = {"teacher_hidden": teacher_hidden, "teacher_weight": teacher_weight}

    own = fused_linear_distillation_loss(student_hidden, student_weight, labels, **teacher)
    step = fused_linear_distillation_loss(student_hidden, student_weight, labels, num_tokens=2 * kept, **teacher)

    torch.testing.assert_close(step, own / 2)


def test_bf16_inputs_match_the_fp32_reference_loosely():
    student_hidden, student_weight, _, teacher_hidden, teacher_weight, labels = make_inputs(False)
    settings = KDSettings(alpha=0.5, temperature=2.0)
    expected = reference(student_hidden, student_weight, None, teacher_hidden @ teacher_weight.T, labels, settings, 1.0)
    hidden_bf16 = student_hidden.detach().bfloat16().requires_grad_(True)

    loss = fused_linear_distillation_loss(hidden_bf16, student_weight.detach().bfloat16(), labels, settings=settings,
                                          teacher_hidden=teacher_hidden.bfloat16(), teacher_weight=teacher_weight.bfloat16())
    loss.backward()

    torch.testing.assert_close(loss.float(), expected, rtol=5e-2, atol=1e-2)
    assert hidden_bf16.grad.dtype == torch.bfloat16
    torch.testing.assert_close(hidden_bf16.grad.float(), student_hidden.grad, rtol=5e-2, atol=2e-3)


def test_auto_chunk_size_respects_the_budget_and_bad_teacher_args_fail():
    assert auto_chunk_size(4096, 151936, budget_bytes=256 << 20) == 55
    assert auto_chunk_size(10, 100) == 10
    with pytest.raises(ValueError, match="give the teacher as teacher_hidden"):
        fused_linear_distillation_loss(torch.randn(2, 3), torch.randn(5, 3), torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize(("objective", "temperature"), list(itertools.product(["forward_kl", "reverse_kl"], [0.5, 1.0, 2.0])))
def test_triton_kernel_matches_the_reference(objective, temperature, monkeypatch):
    import edgedistill.pipeline.distill.fused as fused

    settings = KDSettings(alpha=0.6, temperature=temperature, objective=objective)
    monkeypatch.setattr(fused, "pick_backend", lambda *_args: "triton")  # force the kernel on CPU tensors

    check_against_reference(settings, chunk_size=50)

    from edgedistill.pipeline.distill import triton_kd
    expected_kind = "JITFunction" if torch.cuda.is_available() else "InterpretedFunction"
    assert type(triton_kd._kd_row_kernel).__name__ == expected_kind  # the kernel really ran


def test_triton_kernel_all_masked_rows_and_unscaled_kd(monkeypatch):
    import edgedistill.pipeline.distill.fused as fused

    monkeypatch.setattr(fused, "pick_backend", lambda *_args: "triton")
    check_against_reference(KDSettings(alpha=1.0, temperature=2.0, scale_by_t2=False), with_bias=False, grad_output=0.5)
    student_hidden, student_weight, _, teacher_hidden, teacher_weight, labels = make_inputs(False, ignored_rows=ROWS)
    loss = fused_linear_distillation_loss(student_hidden, student_weight, labels, teacher_hidden=teacher_hidden,
                                          teacher_weight=teacher_weight, backend="triton")
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(student_hidden.grad) == 0


def test_backend_choice():
    from edgedistill.pipeline.distill.fused import pick_backend

    assert pick_backend("auto", torch.device("cpu"), "forward_kl") == "torch"
    assert pick_backend("auto", torch.device("cuda"), "forward_kl") == "triton"
    assert pick_backend("auto", torch.device("cuda"), "jsd") == "torch"
    with pytest.raises(ValueError, match="implements forward_kl, reverse_kl with a dense teacher, not 'skew_kl'"):
        pick_backend("triton", torch.device("cpu"), "skew_kl")
    assert pick_backend("auto", torch.device("cuda"), "forward_kl", sparse_teacher=True) == "torch"
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        pick_backend("cuda", torch.device("cpu"), "forward_kl")


def test_sparse_top_k_teacher_matches_its_reference_and_full_kl_when_complete():
    from edgedistill.pipeline.distill.losses import sparse_distillation_loss

    student_hidden, student_weight, _, teacher_hidden, teacher_weight, labels = make_inputs(False)
    settings = KDSettings(alpha=0.5, temperature=2.0)
    teacher_logprobs = torch.log_softmax(teacher_hidden @ teacher_weight.T / 2.0, -1)  # (N, V) at the KD temperature
    top = teacher_logprobs.topk(64, dim=-1)

    loss = fused_linear_distillation_loss(student_hidden, student_weight, labels, settings=settings, chunk_size=40,
                                          teacher_topk_ids=top.indices, teacher_topk_logprobs=top.values)
    loss.backward()
    fused_grad = student_hidden.grad.clone()
    student_hidden.grad = None
    expected, _ = sparse_distillation_loss(student_hidden @ student_weight.T, top.indices, top.values, labels,
                                           alpha=0.5, temperature=2.0)
    expected.backward()

    torch.testing.assert_close(loss, expected.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused_grad, student_hidden.grad, rtol=1e-5, atol=1e-6)
    full = teacher_logprobs.topk(VOCAB, dim=-1)  # every token cached: no tail, plain forward KL
    complete, _ = sparse_distillation_loss(student_hidden @ student_weight.T, full.indices, full.values, labels,
                                           alpha=0.5, temperature=2.0)
    dense, _ = distillation_loss(student_hidden @ student_weight.T, teacher_hidden @ teacher_weight.T, labels,
                                 alpha=0.5, temperature=2.0)
    torch.testing.assert_close(complete, dense, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="top-k teacher supports objective forward_kl only"):
        fused_linear_distillation_loss(student_hidden, student_weight, labels, settings=KDSettings(objective="jsd"),
                                       teacher_topk_ids=top.indices, teacher_topk_logprobs=top.values)
