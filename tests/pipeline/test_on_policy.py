"""On-policy KD (GKD): seeded lmbda coin, student samples masked after EOS, and the loss on
them pinned to the plain reference."""

import torch

from edgedistill.config import DistillConfig, OnPolicyConfig
from edgedistill.hf import load_model
from edgedistill.data import Packed
from edgedistill.pipeline.distill.losses import distillation_loss
from edgedistill.pipeline.distill.on_policy import (OnPolicyTrainer, is_on_policy_step, on_policy_metrics,
                                                    sample_continuations)


def test_the_lmbda_coin_is_seeded_and_fair():
    draws = [is_on_policy_step(step, seed=4, lmbda=0.3) for step in range(2000)]
    assert draws == [is_on_policy_step(step, seed=4, lmbda=0.3) for step in range(2000)]  # a resumed run agrees
    assert abs(sum(draws) / len(draws) - 0.3) < 0.04
    assert not any(is_on_policy_step(step, 4, 0.0) for step in range(50))
    assert all(is_on_policy_step(step, 4, 1.0) for step in range(50))


def test_samples_are_targets_up_to_and_including_the_first_eos(tiny_llama_dir):
    model = load_model(tiny_llama_dir)
    prompts = torch.randint(3, 500, (3, 5))
    free, free_targets = sample_continuations(model, prompts, 6, temperature=1.0, eos=10**6, seed=0)  # no EOS in reach
    assert free.shape == (3, 11) and torch.equal(free[:, :5], prompts) and free_targets[:, 5:].all()
    with torch.no_grad():  # all logits 0: greedy picks id 0, here the EOS, at once
        model.get_output_embeddings().weight.zero_()
    ids, targets = sample_continuations(model, prompts, 6, temperature=0.0, eos=0, seed=0)
    assert ids.shape == targets.shape == (3, 11) and (ids[:, 5:] == 0).all()
    assert not targets[:, :5].any() and targets[:, 5].all() and not targets[:, 6:].any()


def test_an_on_policy_step_trains_on_student_samples_with_the_reference_loss(tiny_llama_dir):
    cfg = DistillConfig(mode="on_policy", on_policy=OnPolicyConfig(lmbda=1.0), objective="jsd", beta=0.5, alpha=0.7, temperature=1.0, batch_size=2,
                        prompt_tokens=4, response_tokens=6)
    teacher, windows = load_model(tiny_llama_dir), torch.randint(3, 500, (4, 12))
    with torch.no_grad():
        for parameter in teacher.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    student, reference = load_model(tiny_llama_dir), load_model(tiny_llama_dir)
    data = Packed(windows, torch.ones_like(windows, dtype=torch.bool))
    trainer = OnPolicyTrainer(student, data, data[:1], cfg, seed=0, teacher=teacher, eos_token_id=1)

    batch = trainer.batch_for(0, torch.tensor([0, 1]), data[:2])
    assert batch.ids.shape == (2, 10) and torch.equal(batch.ids[:, :4], windows[:2, :4])
    assert not torch.equal(batch.ids[:, 4:], windows[:2, 4:10]) and not batch.targets[:, :4].any()
    num_tokens = int(batch.targets[:, 1:].sum())
    loss, _ = trainer.micro_loss(torch.tensor([0, 1]), batch, num_tokens, share=1.0)
    labels = torch.where(batch.targets[:, 1:], batch.ids[:, 1:], -100).reshape(-1)
    with torch.no_grad():
        teacher_logits = teacher(batch.ids).logits[:, :-1].reshape(labels.numel(), -1)
    plain, _ = distillation_loss(reference(batch.ids).logits[:, :-1].reshape(labels.numel(), -1), teacher_logits, labels,
                                 alpha=0.7, temperature=1.0, objective="jsd", beta=0.5)
    torch.testing.assert_close(loss, plain, rtol=1e-5, atol=1e-6)
    assert trainer._counts == {"generated_tokens": int(batch.targets.sum())}


def test_run_metrics_count_every_logged_step_so_a_resumed_run_reports_the_whole_run():
    log = [{"step": 1, "on_policy": True, "generated_tokens": 10, "aligned_positions": 8, "scored_positions": 10},
           {"step": 2, "on_policy": False},
           {"step": 3, "on_policy": True, "generated_tokens": 6, "aligned_positions": 10, "scored_positions": 10}]
    assert on_policy_metrics(log) == {"on_policy_steps": 2, "on_policy_generated_tokens": 16,
                                      "on_policy_topk_aligned_share": 0.9}
