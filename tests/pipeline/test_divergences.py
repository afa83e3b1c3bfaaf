"""Golden values for every KD divergence, written out with plain numpy on tiny inputs."""

import math

import numpy as np
import pytest
import torch

from edgedistill.pipeline.distill.losses import KD_OBJECTIVES, kd_per_token

STUDENT = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.5, 0.0]])
TEACHER = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 3.0]])


def softmax(x, temperature):
    e = np.exp(np.asarray(x, dtype=np.float64) / temperature)
    return e / e.sum(-1, keepdims=True)


def kl(p, q):
    return (p * np.log(p / q)).sum(-1)


def numpy_divergence(name, temperature, beta=0.5, skew_alpha=0.1):
    p_s, p_t = softmax(STUDENT, temperature), softmax(TEACHER, temperature)
    return {
        "forward_kl": lambda: kl(p_t, p_s),
        "reverse_kl": lambda: kl(p_s, p_t),
        "jsd": lambda: beta * kl(p_t, beta * p_t + (1 - beta) * p_s) + (1 - beta) * kl(p_s, beta * p_t + (1 - beta) * p_s),
        "skew_kl": lambda: kl(p_t, skew_alpha * p_t + (1 - skew_alpha) * p_s),
        "skew_reverse_kl": lambda: kl(p_s, skew_alpha * p_s + (1 - skew_alpha) * p_t),
    }[name]()


@pytest.mark.parametrize("name", sorted(KD_OBJECTIVES))
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_each_divergence_matches_its_formula(name, temperature):
    ours = kd_per_token(name, STUDENT, TEACHER, temperature, beta=0.3, skew_alpha=0.2)

    expected = numpy_divergence(name, temperature, beta=0.3, skew_alpha=0.2)

    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5)
    assert (ours >= 0).all()


def test_jsd_endpoints_are_forward_and_reverse_kl():
    forward = kd_per_token("forward_kl", STUDENT, TEACHER, 1.0)
    reverse = kd_per_token("reverse_kl", STUDENT, TEACHER, 1.0)

    torch.testing.assert_close(kd_per_token("jsd", STUDENT, TEACHER, 1.0, beta=0.0), forward)
    torch.testing.assert_close(kd_per_token("jsd", STUDENT, TEACHER, 1.0, beta=1.0), reverse)
    assert not torch.allclose(forward, reverse)


def test_jsd_half_is_the_symmetric_jensen_shannon_bounded_by_ln2():
    value = kd_per_token("jsd", STUDENT, TEACHER, 1.0, beta=0.5)
    swapped = kd_per_token("jsd", TEACHER, STUDENT, 1.0, beta=0.5)

    torch.testing.assert_close(value, swapped)
    assert (value <= math.log(2)).all()


def test_skew_zero_is_plain_kl():
    torch.testing.assert_close(kd_per_token("skew_kl", STUDENT, TEACHER, 1.0, skew_alpha=0.0),
                               kd_per_token("forward_kl", STUDENT, TEACHER, 1.0))
    torch.testing.assert_close(kd_per_token("skew_reverse_kl", STUDENT, TEACHER, 1.0, skew_alpha=0.0),
                               kd_per_token("reverse_kl", STUDENT, TEACHER, 1.0))


@pytest.mark.parametrize("name", sorted(KD_OBJECTIVES))
def test_every_divergence_is_zero_for_equal_distributions_and_finite_with_masked_vocab(name):
    logits = torch.tensor([[0.5, float("-inf"), 1.0]], requires_grad=True)

    value = kd_per_token(name, logits, logits.detach(), 1.5, beta=0.5, skew_alpha=0.1)
    value.sum().backward()

    assert abs(value.item()) < 1e-6
    assert torch.isfinite(logits.grad).all()


def test_feature_loss_against_a_plain_reference():
    from edgedistill.pipeline.distill.features import FeatureDistillationLoss, uniform_layer_map

    layer_map = uniform_layer_map(student_layers=2, teacher_layers=4)
    student = [torch.randn(2, 5, 6) for _ in range(3)]
    teacher = [torch.randn(2, 5, 10) for _ in range(5)]
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    mse, cosine = FeatureDistillationLoss(6, 10, layer_map, "mse"), FeatureDistillationLoss(6, 10, layer_map, "cosine")

    got_mse, got_cosine = mse(student, teacher, mask), cosine(student, teacher, mask)

    assert layer_map == {1: 2, 2: 4}
    keep = mask.bool()
    expected_mse = sum(((mse.projections[str(i)](student[i]) - teacher[j]) ** 2).mean(-1)[keep].mean() for i, j in layer_map.items()) / 2
    expected_cos = sum((1 - torch.nn.functional.cosine_similarity(cosine.projections[str(i)](student[i]), teacher[j], dim=-1))[keep].mean()
                       for i, j in layer_map.items()) / 2
    torch.testing.assert_close(got_mse, expected_mse)
    torch.testing.assert_close(got_cosine, expected_cos)
    got_mse.backward()
    assert mse.projections["1"].weight.grad is not None  # the projection learns


def test_equal_widths_use_no_projection_and_identical_states_cost_nothing():
    from edgedistill.pipeline.distill.features import FeatureDistillationLoss

    states = [torch.randn(1, 4, 8) for _ in range(3)]
    loss = FeatureDistillationLoss(8, 8, {1: 1, 2: 2}, "cosine")

    assert not list(loss.parameters())
    assert loss(states, states).item() < 1e-6


def test_sparse_kl_golden_buckets():
    from edgedistill.pipeline.distill.losses import sparse_forward_kl_per_token

    student = torch.tensor([[0.0, 1.0, -1.0, 0.5]])
    teacher_probs = np.array([0.5, 0.3, 0.15, 0.05])
    ids = torch.tensor([[0, 1]])  # the teacher's top-2; tail = tokens 2 and 3
    logprobs = torch.tensor([[math.log(0.5), math.log(0.3)]])

    value = sparse_forward_kl_per_token(student, ids, logprobs, 1.0)

    p_s = softmax(student, 1.0)[0]
    buckets_t = np.array([0.5, 0.3, 0.2])
    buckets_s = np.array([p_s[0], p_s[1], p_s[2] + p_s[3]])
    assert value.item() == pytest.approx(kl(buckets_t, buckets_s), rel=1e-5)
    assert value.item() <= kl(teacher_probs, p_s) + 1e-9  # a coarsening never increases KL
