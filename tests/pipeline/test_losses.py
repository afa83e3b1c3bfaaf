import math

import pytest
import torch
import torch.nn.functional as F

from edgedistill.pipeline.distill.losses import IGNORE_INDEX, distillation_loss, forward_kl_per_token


def test_forward_kl_golden_value():
    # p_t = softmax([0, ln 3]) = (1/4, 3/4); p_s = (1/2, 1/2):
    # KL(p_t || p_s) = 1/4 ln(1/2) + 3/4 ln(3/2)
    teacher = torch.tensor([[0.0, math.log(3.0)]])
    student = torch.tensor([[0.0, 0.0]])

    value = forward_kl_per_token(student, teacher, temperature=1.0)

    assert value.item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), rel=1e-6)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_forward_kl_direction_and_temperature_match_torch_kl_div(temperature):
    student, teacher = torch.randn(3 * 47, 1271), torch.randn(3 * 47, 1271) * 3

    ours = forward_kl_per_token(student, teacher, temperature)
    # kl_div(input=log q, target=log p, log_target=True) = sum p (log p - log q) = KL(p || q)
    reference = F.kl_div(
        F.log_softmax(student / temperature, -1), F.log_softmax(teacher / temperature, -1), reduction="none", log_target=True
    ).sum(-1)

    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ours, forward_kl_per_token(teacher, student, temperature))  # not symmetric


def test_teacher_zero_probability_entries_contribute_nothing():
    student = torch.tensor([[0.0, 1.0, 2.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 1.0, float("-inf")]])

    value = forward_kl_per_token(student, teacher, temperature=1.0)
    value.sum().backward()

    teacher_probs = torch.softmax(teacher, -1)[0, :2]
    student_logprobs = torch.log_softmax(student.detach(), -1)[0, :2]
    assert value.item() == pytest.approx((teacher_probs * (teacher_probs.log() - student_logprobs)).sum().item(), rel=1e-6)
    assert torch.isfinite(student.grad).all()


def test_alpha_endpoints_are_pure_ce_and_pure_scaled_kd():
    student, teacher = torch.randn(10, 50), torch.randn(10, 50)
    labels = torch.randint(0, 50, (10,))

    ce_only, _ = distillation_loss(student, teacher, labels, alpha=0.0, temperature=2.0)
    kd_only, _ = distillation_loss(student, teacher, labels, alpha=1.0, temperature=2.0)
    kd_unscaled, _ = distillation_loss(student, teacher, labels, alpha=1.0, temperature=2.0, scale_by_t2=False)

    torch.testing.assert_close(ce_only, F.cross_entropy(student, labels))
    torch.testing.assert_close(kd_only, 4.0 * forward_kl_per_token(student, teacher, 2.0).mean())
    torch.testing.assert_close(kd_unscaled, kd_only / 4.0)


def test_mixture_and_ignored_rows_and_step_normalization():
    student, teacher = torch.randn(6, 20), torch.randn(6, 20)
    labels = torch.tensor([1, 2, IGNORE_INDEX, 4, IGNORE_INDEX, 5])
    kept = labels != IGNORE_INDEX

    loss, parts = distillation_loss(student, teacher, labels, alpha=0.3, temperature=1.5)
    loss_over_step, _ = distillation_loss(student, teacher, labels, alpha=0.3, temperature=1.5, num_tokens=8)

    kd = 1.5**2 * forward_kl_per_token(student[kept], teacher[kept], 1.5).mean()
    ce = F.cross_entropy(student[kept], labels[kept])
    torch.testing.assert_close(loss, 0.3 * kd + 0.7 * ce)
    torch.testing.assert_close(parts["kd"], kd)
    torch.testing.assert_close(loss_over_step, loss * 4 / 8)


def test_all_masked_batch_gives_zero_loss_and_zero_grads():
    student = torch.randn(4, 30, requires_grad=True)
    teacher = torch.randn(4, 30)
    labels = torch.full((4,), IGNORE_INDEX)

    loss, _ = distillation_loss(student, teacher, labels, alpha=0.5, temperature=2.0)
    loss.backward()

    assert loss.item() == 0.0
    assert torch.count_nonzero(student.grad) == 0


def test_gradient_with_upstream_scale():
    student = torch.randn(5, 17, requires_grad=True)
    teacher, labels = torch.randn(5, 17), torch.randint(0, 17, (5,))

    loss, _ = distillation_loss(student, teacher, labels, alpha=0.5, temperature=2.0)
    (loss * 3.0).backward()
    reference_input = student.detach().clone().requires_grad_(True)
    plain = 0.5 * 4.0 * F.kl_div(
        F.log_softmax(reference_input / 2.0, -1), F.log_softmax(teacher / 2.0, -1), reduction="batchmean", log_target=True
    ) + 0.5 * F.cross_entropy(reference_input, labels)
    (plain * 3.0).backward()

    torch.testing.assert_close(student.grad, reference_input.grad, rtol=1e-5, atol=1e-7)
