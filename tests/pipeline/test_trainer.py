"""The distillation trainer: accumulation normalization, feature KD, evaluation and early
stopping, checkpoints and exact resume, the top-k teacher cache."""

import json

import pytest
import torch

from edgedistill.config import DistillConfig
from edgedistill.errors import UserError
from edgedistill.hf import load_model
from edgedistill.data import Packed
from edgedistill.pipeline.distill.trainer import Trainer, batch_indices


def _trained_teacher(model_dir):
    """The tiny random teacher with perturbed weights (so student and teacher differ) and a
    final norm scaled up so its next-token distributions are peaked like a trained model's."""
    teacher = load_model(model_dir)
    with torch.no_grad():
        for parameter in teacher.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
        teacher.base_model.norm.weight.mul_(20.0)
    return teacher


def _teacher_samples(teacher, count=40, length=24):
    """Windows sampled from the teacher: data it predicts well (a peaked distribution, as
    in real KD), so top-1 and retention are meaningful."""
    with torch.no_grad():
        prompts = torch.randint(0, teacher.config.vocab_size, (count, 1))
        samples = teacher.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=length - 1,
                                   do_sample=True, top_k=0, pad_token_id=0)
    return Packed(samples, torch.ones_like(samples, dtype=torch.bool))


def _windows(count=24, length=16, vocab=200, masked_prompt=True):
    ids = torch.randint(0, vocab, (count, length))
    targets = torch.ones_like(ids, dtype=torch.bool)
    if masked_prompt:  # uneven target counts per window: accumulation must still normalize right
        for row in range(count):
            targets[row, : row % 7] = False
    return Packed(ids, targets)


def test_batch_order_is_a_pure_function_of_seed_and_step():
    first = [batch_indices(step, 10, 4, seed=3).tolist() for step in range(6)]
    assert first == [batch_indices(step, 10, 4, seed=3).tolist() for step in range(6)]
    assert sorted(first[0] + first[1]) == sorted(set(first[0] + first[1]))  # no repeats inside an epoch
    assert first != [batch_indices(step, 10, 4, seed=4).tolist() for step in range(6)]


def test_gradient_accumulation_gives_the_same_gradient_as_one_big_batch(tiny_llama_dir):
    teacher, data = _trained_teacher(tiny_llama_dir), _windows()
    results = []
    for accumulation in (1, 4):
        cfg = DistillConfig(steps=1, batch_size=8, grad_accumulation=accumulation, alpha=0.5)
        trainer = Trainer(load_model(tiny_llama_dir), data, data[:2], cfg, seed=0, teacher=teacher)
        grads, optimizer_step = [], trainer.optimizer.step

        def capture(*args, **kwargs):
            grads.extend(p.grad.clone() for p in trainer.body.parameters())
            return optimizer_step(*args, **kwargs)

        trainer.optimizer.step = capture
        results.append((trainer.step(0), grads))
    (row_one, grads_one), (row_four, grads_four) = results
    assert row_one["loss"] == pytest.approx(row_four["loss"], rel=1e-5)
    assert row_one["tokens"] == row_four["tokens"] == int(data[batch_indices(0, len(data), 8, 0)].targets[:, 1:].sum())
    for one, four in zip(grads_one, grads_four):
        torch.testing.assert_close(one, four, rtol=1e-4, atol=1e-7)
    with pytest.raises(UserError, match="must be a multiple of distill.grad_accumulation"):
        Trainer(load_model(tiny_llama_dir), data, data[:2], DistillConfig(batch_size=8, grad_accumulation=3), seed=0,
                teacher=teacher)


def test_alpha_zero_trains_on_cross_entropy_without_running_the_teacher(tiny_llama_dir):
    teacher, data = _trained_teacher(tiny_llama_dir), _windows()
    cfg = DistillConfig(steps=1, batch_size=8, alpha=0.0)
    trainer = Trainer(load_model(tiny_llama_dir), data, data[:2], cfg, seed=0, teacher=teacher)
    decoder = teacher.get_decoder()
    calls = []
    handle = decoder.register_forward_hook(lambda *args: calls.append(1))
    batch = data[batch_indices(0, len(data), 8, 0)]
    with torch.no_grad():
        logits = load_model(tiny_llama_dir)(batch.ids).logits[:, :-1]
    labels = torch.where(batch.targets[:, 1:], batch.ids[:, 1:], -100)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    row = trainer.step(0)
    handle.remove()
    assert calls == []  # the KD term has weight 0: the teacher's forward would be wasted compute
    assert row["loss"] == pytest.approx(float(expected), rel=1e-5)


def test_feature_kd_trains_the_projections_and_is_logged(tiny_llama_dir):
    from transformers import AutoConfig, AutoModelForCausalLM

    teacher = load_model(tiny_llama_dir)
    config = AutoConfig.from_pretrained(tiny_llama_dir)
    config.hidden_size, config.num_hidden_layers = 32, 1  # narrower and shallower: real projections
    student, data = AutoModelForCausalLM.from_config(config), _windows(vocab=120)
    cfg = DistillConfig(steps=6, batch_size=4, learning_rate=3e-3, feature_weight=1.0, feature_loss="cosine")
    trainer = Trainer(student, data, data[:2], cfg, seed=0, teacher=teacher)
    projections = trainer.body_module.feature_loss.projections
    assert [p.weight.shape for p in projections.values()] == [(64, 32)]
    before = [p.detach().clone() for p in projections.parameters()]
    log = trainer.fit().log
    assert all("feature_loss" in row and row["feature_loss"] >= 0 for row in log)
    assert log[-1]["feature_loss"] < log[0]["feature_loss"]
    assert any(not torch.equal(a, b) for a, b in zip(before, projections.parameters()))


def test_periodic_evaluation_and_early_stopping_on_retention(tiny_llama_dir, tmp_path):
    teacher = _trained_teacher(tiny_llama_dir)
    data = _teacher_samples(teacher, count=24)
    cfg = DistillConfig(steps=20, batch_size=4, eval_every=3, eval_windows=2, stop_at_retention=0.01)
    log_path = tmp_path / "log.jsonl"
    result = Trainer(load_model(tiny_llama_dir), data[4:], data[:4], cfg, seed=0, teacher=teacher, log_path=log_path).fit()
    assert result.stopped_early and len(result.log) == 3  # first evaluation already meets 1% retention
    row = result.log[-1]
    assert {"val_loss", "val_ppl", "val_top1", "val_agreement", "val_kl", "val_retention_top1"} <= set(row)
    assert row["val_ppl"] == pytest.approx(torch.tensor(row["val_loss"]).exp().item(), rel=1e-6)
    assert [json.loads(line)["step"] for line in log_path.read_text().splitlines()] == [1, 2, 3]


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(tiny_llama_dir, tmp_path, monkeypatch):
    from edgedistill.pipeline.distill import checkpoint

    teacher, data = _trained_teacher(tiny_llama_dir), _windows()
    cfg = DistillConfig(steps=7, batch_size=4, learning_rate=5e-3, lr_schedule="cosine", warmup_steps=2, feature_weight=0.5)

    torch.manual_seed(0)
    straight = load_model(tiny_llama_dir)
    expected = Trainer(straight, data, data[:2], cfg, seed=0, teacher=teacher).fit().log

    torch.manual_seed(0)
    state = tmp_path / "state"
    crashing = Trainer(load_model(tiny_llama_dir), data, data[:2], cfg, seed=0, teacher=teacher, state_dir=state,
                       checkpoint_every=2, keep_checkpoints=2)
    original_step = crashing.step

    def step_then_crash(step):
        if step == 5:
            raise KeyboardInterrupt  # killed after the checkpoint of step 4
        return original_step(step)

    monkeypatch.setattr(crashing, "step", step_then_crash)
    with pytest.raises(KeyboardInterrupt):
        crashing.fit()
    assert sorted(p.name for p in state.iterdir()) == ["step-0000002", "step-0000004"]
    assert checkpoint.is_intact(state / "step-0000004")

    (state / ".tmp-step-0000006").mkdir()  # a half-written checkpoint from the kill
    resumed_student = load_model(tiny_llama_dir)
    result = Trainer(resumed_student, data, data[:2], cfg, seed=0, teacher=teacher, state_dir=state,
                     checkpoint_every=2).fit()
    assert result.resumed_from == 4 and not (state / ".tmp-step-0000006").exists()
    assert [r["step"] for r in result.log] == list(range(1, 8))
    assert [r["loss"] for r in result.log] == pytest.approx([r["loss"] for r in expected], rel=1e-5)
    for a, b in zip(straight.parameters(), resumed_student.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_corrupted_checkpoint_is_skipped_for_the_previous_one(tiny_llama_dir, tmp_path):
    from edgedistill.pipeline.distill.checkpoint import latest_checkpoint

    teacher, data = _trained_teacher(tiny_llama_dir), _windows()
    state = tmp_path / "state"
    Trainer(load_model(tiny_llama_dir), data, data[:2], DistillConfig(steps=5, batch_size=4), seed=0, teacher=teacher,
            state_dir=state, checkpoint_every=2).fit()
    assert latest_checkpoint(state).name == "step-0000004"
    with (state / "step-0000004" / "student.safetensors").open("r+b") as handle:
        handle.seek(-8, 2)
        handle.write(b"\0" * 8)
    assert latest_checkpoint(state).name == "step-0000002"


def test_training_from_the_topk_cache_matches_online_kd_without_the_teacher(tiny_llama_dir, tmp_path):
    from edgedistill.pipeline.distill.teacher_cache import TeacherCache, build_teacher_cache, windows_fingerprint
    from edgedistill.pipeline.evaluate import compare_on_heldout

    teacher = _trained_teacher(tiny_llama_dir)
    data = _teacher_samples(teacher)
    train, heldout = data[:32], data[32:]
    cfg = DistillConfig(steps=30, batch_size=8, learning_rate=3e-3, alpha=0.8, temperature=1.0, teacher_topk=64)
    ids = torch.cat([train.ids, heldout.ids])
    fingerprint = windows_fingerprint(ids, "teacher-hash", 64, 1.0, 512)
    cache = build_teacher_cache(teacher, ids, tmp_path / "cache", k=64, temperature=1.0, vocab_size=512,
                                fingerprint=fingerprint, chunk_windows=16)
    # uint16 ids + fp16 log-probs + fp32 tail = 260 bytes per position, plus the .npy headers
    assert 260 <= cache.bytes_per_token < 264
    assert 0.0 <= cache.mean_tail_mass() < 0.5

    def online_forward(*args, **kwargs):
        raise AssertionError("the teacher ran while training from the cache")

    torch.manual_seed(0)
    online_student = load_model(tiny_llama_dir)
    Trainer(online_student, train, heldout, cfg, seed=0, teacher=teacher).fit()
    torch.manual_seed(0)
    cached_student = load_model(tiny_llama_dir)
    original_forward = teacher.forward
    teacher.forward = online_forward
    teacher.base_model.forward = online_forward
    try:
        result = Trainer(cached_student, train, heldout, cfg, seed=0,
                         cache=TeacherCache(tmp_path / "cache", fingerprint)).fit()
    finally:
        teacher.forward = original_forward
        del teacher.base_model.forward
    assert {"val_agreement", "val_retention_top1"} <= set(result.log[-1])

    online = compare_on_heldout(online_student, teacher, heldout.ids)
    cached = compare_on_heldout(cached_student, teacher, heldout.ids)
    online_loss, cached_loss = torch.tensor(online["student_val_ppl"]).log(), torch.tensor(cached["student_val_ppl"]).log()
    assert abs(cached_loss - online_loss) / online_loss < 0.02

    with pytest.raises(UserError, match="built for another teacher"):
        TeacherCache(tmp_path / "cache", "other")
    (tmp_path / "cache" / "logprobs-00000.npy").write_bytes(b"junk")
    with pytest.raises(UserError, match="missing or corrupted"):
        TeacherCache(tmp_path / "cache", fingerprint).rows([0])


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tiny_llama_dir, tmp_path):
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    from tests.pipeline.ddp_worker import train_and_save

    single, double = tmp_path / "single", tmp_path / "ddp"
    single.mkdir(), double.mkdir()
    train_and_save(str(tiny_llama_dir), str(single))
    worker = Path(__file__).with_name("ddp_worker.py")
    # `accelerate launch --multi_gpu` starts its processes through torchrun; on a CPU-only
    # machine torchrun is called directly, and ACCELERATE_USE_CPU makes Accelerate use gloo DDP
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    with socket.socket() as probe:  # a free port for the rendezvous (port 0 hangs static rendezvous)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launched = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
                               str(worker), str(tiny_llama_dir), str(double)], capture_output=True, text=True, timeout=240,
                              env=env)
    assert launched.returncode == 0, launched.stderr[-3000:]
    one, two = (json.loads((folder / "log.json").read_text()) for folder in (single, double))
    assert (one["processes"], two["processes"]) == (1, 2)
    assert [r["loss"] for r in two["log"]] == pytest.approx([r["loss"] for r in one["log"]], rel=1e-5)
    assert [r["tokens"] for r in two["log"]] == [r["tokens"] for r in one["log"]]
    weights_one, weights_two = (load_file(str(folder / "student.safetensors")) for folder in (single, double))
    for name, weight in weights_one.items():
        torch.testing.assert_close(weights_two[name], weight, rtol=1e-4, atol=2e-6, msg=name)
