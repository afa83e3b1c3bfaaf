"""The chunked fused loss equals the plain reference in value and gradients."""

import itertools

import pytest
import torch

from edgedistill.pipeline.distill.fused import (
    FusedLinearDistillationLoss, KDSettings, auto_chunk_size, fused_linear_distillation_loss,
)
from edgedistill.pipeline.distill.losses import IGNORE_INDEX, KD_OBJECTIVES, distillation_loss

ROWS, VOCAB, STUDENT_WIDTH, TEACHER_WIDTH = 3 * 47, 1271, 24, 40
# Triton needs CUDA tensors on a GPU machine; elsewhere it interprets CPU tensors (conftest).
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def make_inputs(with_bias: bool, ignored_rows: int = 13, device: str = "cpu"):
    def leaf(*shape, scale=1.0):
        return (torch.randn(*shape) * scale).to(device).requires_grad_(True)

    student_hidden, student_weight = leaf(ROWS, STUDENT_WIDTH), leaf(VOCAB, STUDENT_WIDTH, scale=0.25)
    student_bias = leaf(VOCAB) if with_bias else None
    teacher_hidden, teacher_weight = torch.randn(ROWS, TEACHER_WIDTH).to(device), (torch.randn(VOCAB, TEACHER_WIDTH) / 3).to(device)
    labels = torch.randint(0, VOCAB, (ROWS,))
    labels[torch.randperm(ROWS)[:ignored_rows]] = IGNORE_INDEX
    return student_hidden, student_weight, student_bias, teacher_hidden, teacher_weight, labels.to(device)


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


def check_against_reference(settings, *, with_bias=True, chunk_size=29, grad_output=2.5, teacher_as_logits=False,
                            device="cpu", masked_teacher_columns=(), rtol=1e-5, atol=1e-6):
    student_hidden, student_weight, student_bias, teacher_hidden, teacher_weight, labels = make_inputs(with_bias, device=device)
    teacher_logits = teacher_hidden @ teacher_weight.T  # (N, V)
    if masked_teacher_columns:
        teacher_logits[:, list(masked_teacher_columns)] = float("-inf")
        teacher_as_logits = True
    expected = reference(student_hidden, student_weight, student_bias, teacher_logits, labels, settings, grad_output)
    expected_grads = [t.grad.clone() for t in leaves([student_hidden, student_weight, student_bias])]
    for t in leaves([student_hidden, student_weight, student_bias]):
        t.grad = None

    teacher = {"teacher_logits": teacher_logits} if teacher_as_logits else {"teacher_hidden": teacher_hidden, "teacher_weight": teacher_weight}
    loss = fused_linear_distillation_loss(
        student_hidden, student_weight, labels, student_bias=student_bias, settings=settings, chunk_size=chunk_size, **teacher
    )
    (loss * grad_output).backward()

    torch.testing.assert_close(loss.detach(), expected, rtol=rtol, atol=atol)
    for got, want in zip([t.grad for t in leaves([student_hidden, student_weight, student_bias])], expected_grads):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


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


@pytest.mark.parametrize("objective", ["forward_kl", "reverse_kl"])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_masked_teacher_vocab_matches_the_reference(objective, backend, monkeypatch):
    import edgedistill.pipeline.distill.fused as fused

    monkeypatch.setattr(fused, "pick_backend", lambda *_args: backend)
    settings = KDSettings(alpha=0.5, temperature=1.0, objective=objective)
    # Reverse KL puts student mass where the teacher has none: each such term is about
    # p_s * 1e4 (the log-prob floor), so fp32 summation order shows at ~1e-3 relative.
    tolerance = {"rtol": 1e-5, "atol": 1e-6} if objective == "forward_kl" else {"rtol": 5e-3, "atol": 5e-5}

    check_against_reference(settings, chunk_size=50, masked_teacher_columns=[5], device=DEVICE, **tolerance)
    check_against_reference(settings, chunk_size=50, masked_teacher_columns=range(1024), device=DEVICE, **tolerance)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 Triton kernels need CUDA")
def test_triton_kernel_in_bf16_on_cuda():
    student_hidden, student_weight, _, teacher_hidden, teacher_weight, labels = make_inputs(False, device="cuda")
    settings = KDSettings(alpha=0.5, temperature=2.0)
    expected = reference(student_hidden, student_weight, None, teacher_hidden @ teacher_weight.T, labels, settings, 1.0)
    hidden = student_hidden.detach().bfloat16().requires_grad_(True)

    loss = fused_linear_distillation_loss(hidden, student_weight.detach().bfloat16(), labels, settings=settings,
                                          teacher_hidden=teacher_hidden.bfloat16(), teacher_weight=teacher_weight.bfloat16(),
                                          backend="triton")
    loss.backward()

    torch.testing.assert_close(loss.float(), expected, rtol=5e-2, atol=1e-2)
    torch.testing.assert_close(hidden.grad.float(), student_hidden.grad, rtol=5e-2, atol=2e-3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"teacher_logits": torch.zeros(ROWS - 1, VOCAB)}, "the teacher has 140 rows, the student 141"),
        ({"teacher_logits": torch.zeros(ROWS, VOCAB - 20)}, "teacher logits have 1251 vocab columns"),
        ({"teacher_hidden": torch.zeros(ROWS, 40), "teacher_weight": torch.zeros(VOCAB, 41)}, "does not fit vocab"),
        ({"labels": torch.full((ROWS,), -1)}, "labels must be in [0, 1271) or ignore_index (-100)"),
        ({"labels": torch.full((ROWS,), VOCAB)}, "labels must be in [0, 1271)"),
    ],
)
def test_bad_shapes_and_labels_fail_before_any_kernel(change, message):
    student_hidden, student_weight, _, teacher_hidden, teacher_weight, labels = make_inputs(False)
    arguments = {"labels": labels, "teacher_hidden": teacher_hidden, "teacher_weight": teacher_weight, **change}
    if "teacher_logits" in change:
        del arguments["teacher_hidden"], arguments["teacher_weight"]

    with pytest.raises(ValueError) as error:
        fused_linear_distillation_loss(student_hidden, student_weight, arguments.pop("labels"), **arguments)

    assert message in str(error.value)


def test_a_frozen_lm_head_gets_no_gradient_work():
    student_hidden, student_weight, _, teacher_hidden, teacher_weight, labels = make_inputs(False)
    frozen = student_weight.detach()

    loss = fused_linear_distillation_loss(student_hidden, frozen, labels, teacher_hidden=teacher_hidden,
                                          teacher_weight=teacher_weight)
    loss.backward()

    assert student_hidden.grad is not None and frozen.grad is None


def test_auto_chunk_size_respects_the_budget_and_bad_teacher_args_fail():
    assert auto_chunk_size(4096, 151936, 896, "torch", budget_bytes=256 << 20) == 33
    assert auto_chunk_size(4096, 151936, 896, "triton", budget_bytes=256 << 20) == 146
    assert auto_chunk_size(10, 100, 8) == 10
    assert auto_chunk_size(4096, 151936, 896, "triton", device_type="cuda") == 586  # 1 GiB on a GPU
    with pytest.raises(ValueError, match="give the teacher as teacher_hidden"):
        fused_linear_distillation_loss(torch.randn(2, 3), torch.randn(5, 3), torch.zeros(2, dtype=torch.long))


def test_alpha_zero_without_a_teacher_is_plain_cross_entropy_in_value_and_gradients():
    student_hidden, student_weight, student_bias, _, _, labels = make_inputs(with_bias=True)
    logits = student_hidden @ student_weight.T + student_bias
    expected = torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)  # mean over kept labels
    (expected * 2.5).backward()
    expected_grads = [t.grad.clone() for t in (student_hidden, student_weight, student_bias)]
    for t in (student_hidden, student_weight, student_bias):
        t.grad = None
    loss = fused_linear_distillation_loss(student_hidden, student_weight, labels, student_bias=student_bias,
                                          settings=KDSettings(alpha=0.0), chunk_size=29)
    (loss * 2.5).backward()
    torch.testing.assert_close(loss.detach(), expected.detach(), rtol=1e-5, atol=1e-6)
    for got, want in zip((student_hidden.grad, student_weight.grad, student_bias.grad), expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="none only with alpha 0"):  # a KD term with weight > 0 needs a teacher
        fused_linear_distillation_loss(student_hidden, student_weight, labels, settings=KDSettings(alpha=0.5))


@pytest.mark.parametrize(("objective", "temperature"), list(itertools.product(["forward_kl", "reverse_kl"], [0.5, 1.0, 2.0])))
def test_triton_kernel_matches_the_reference(objective, temperature, monkeypatch):
    import edgedistill.pipeline.distill.fused as fused

    settings = KDSettings(alpha=0.6, temperature=temperature, objective=objective)
    monkeypatch.setattr(fused, "pick_backend", lambda *_args: "triton")  # force the kernel on CPU tensors

    check_against_reference(settings, chunk_size=50, device=DEVICE)

    from edgedistill.pipeline.distill import triton_kd
    expected_kind = "JITFunction" if torch.cuda.is_available() else "InterpretedFunction"
    assert type(triton_kd._kd_row_kernel).__name__ == expected_kind  # the kernel really ran


def test_triton_kernel_all_masked_rows_and_unscaled_kd(monkeypatch):
    import edgedistill.pipeline.distill.fused as fused

    monkeypatch.setattr(fused, "pick_backend", lambda *_args: "triton")
    check_against_reference(KDSettings(alpha=1.0, temperature=2.0, scale_by_t2=False), with_bias=False, grad_output=0.5,
                            device=DEVICE)
    student_hidden, student_weight, _, teacher_hidden, teacher_weight, labels = make_inputs(False, ignored_rows=ROWS,
                                                                                            device=DEVICE)
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
    (loss * 1.5).backward()
    fused_grads = [student_hidden.grad.clone(), student_weight.grad.clone()]
    student_hidden.grad = student_weight.grad = None
    expected, _ = sparse_distillation_loss(student_hidden @ student_weight.T, top.indices, top.values, labels,
                                           alpha=0.5, temperature=2.0)
    (expected * 1.5).backward()

    torch.testing.assert_close(loss, expected.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused_grads[0], student_hidden.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused_grads[1], student_weight.grad, rtol=1e-5, atol=1e-6)
    full = teacher_logprobs.topk(VOCAB, dim=-1)  # every token cached: no tail, plain forward KL
    complete, _ = sparse_distillation_loss(student_hidden @ student_weight.T, full.indices, full.values, labels,
                                           alpha=0.5, temperature=2.0)
    dense, _ = distillation_loss(student_hidden @ student_weight.T, teacher_hidden @ teacher_weight.T, labels,
                                 alpha=0.5, temperature=2.0)
    torch.testing.assert_close(complete, dense, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="top-k teacher supports objective forward_kl only"):
        fused_linear_distillation_loss(student_hidden, student_weight, labels, settings=KDSettings(objective="jsd"),
                                       teacher_topk_ids=top.indices, teacher_topk_logprobs=top.values)


def test_sparse_teacher_gradients_stay_finite_for_a_confident_student_and_a_complete_cache():
    from edgedistill.pipeline.distill.losses import sparse_forward_kl_per_token

    student = torch.randn(4, 50)
    student[:, 3] = 200.0  # nearly all mass on one token
    student.requires_grad_(True)
    teacher_logprobs = torch.log_softmax(torch.randn(4, 50), -1)

    for k in (5, 50):
        top = teacher_logprobs.topk(k, dim=-1)
        value = sparse_forward_kl_per_token(student, top.indices, top.values, 1.0)
        value.sum().backward()
        assert torch.isfinite(value).all() and torch.isfinite(student.grad).all()
        student.grad = None
