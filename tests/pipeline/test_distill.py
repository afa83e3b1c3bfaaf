import torch

from edgedistill.config import DistillConfig
from edgedistill.hf import load_model
from edgedistill.pipeline.distill.stage import train
from edgedistill.pipeline.evaluate import compare_on_heldout


def test_training_moves_the_student_towards_the_data(tiny_llama_dir):
    teacher, student = load_model(tiny_llama_dir), load_model(tiny_llama_dir)
    windows = torch.randint(0, 64, (16, 24))  # a small alphabet: easy to learn
    before = compare_on_heldout(student, teacher, windows[:4])

    log = train(student, teacher, windows, DistillConfig(steps=30, batch_size=4, learning_rate=3e-3, alpha=0.5), seed=0)
    after = compare_on_heldout(student, teacher, windows[:4])

    assert [row["step"] for row in log] == list(range(1, 31))
    assert log[-1]["loss"] < log[0]["loss"]
    assert after["student_val_ppl"] < before["student_val_ppl"]
    assert before["student_teacher_val_kl"] < 1e-6  # identical weights at the start
    assert not student.training


def test_the_trainer_micro_loss_equals_the_reference_on_materialized_logits(tiny_llama_dir):
    from edgedistill.data import Packed
    from edgedistill.pipeline.distill.losses import distillation_loss
    from edgedistill.pipeline.distill.trainer import Trainer

    cfg = DistillConfig(alpha=0.4, temperature=2.0, objective="jsd", beta=0.3, batch_size=3)
    teacher, batch = load_model(tiny_llama_dir), torch.randint(0, 512, (3, 11))
    with torch.no_grad():
        for parameter in teacher.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    fused_student, plain_student = load_model(tiny_llama_dir), load_model(tiny_llama_dir)
    targets = torch.ones_like(batch, dtype=torch.bool)
    targets[0, :6] = False  # a masked prompt: those next-token positions are ignored
    packed = Packed(batch, targets)
    trainer = Trainer(fused_student, packed, packed[:1], cfg, seed=0, teacher=teacher)

    fused, _ = trainer.micro_loss(torch.arange(3), packed, num_tokens=int(targets[:, 1:].sum()), share=1.0)
    fused.backward()
    labels = torch.where(targets[:, 1:], batch[:, 1:], -100).reshape(-1)
    with torch.no_grad():
        teacher_logits = teacher(batch).logits[:, :-1].reshape(labels.numel(), -1)
    plain, _ = distillation_loss(plain_student(batch).logits[:, :-1].reshape(labels.numel(), -1), teacher_logits, labels,
                                 alpha=0.4, temperature=2.0, objective="jsd", beta=0.3)
    plain.backward()

    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    for (name, fused_param), plain_param in zip(fused_student.named_parameters(), plain_student.parameters()):
        torch.testing.assert_close(fused_param.grad, plain_param.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_vocab_sharing_rules(tiny_llama_dir, tiny_qwen2_dir):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from edgedistill.hf import load_tokenizer
    from edgedistill.pipeline.distill.stage import shared_vocab_size

    llama, qwen2 = load_model(tiny_llama_dir), load_model(tiny_qwen2_dir)
    tokenizer = load_tokenizer(tiny_llama_dir)
    llama.resize_token_embeddings(576)  # padded embedding rows, same tokenizer
    other = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tokenizer.backend_tokenizer.to_str()))
    other.add_tokens(["<|extra|>"])

    rows = llama.get_output_embeddings().out_features, qwen2.get_output_embeddings().out_features
    assert rows == (576, 512)
    assert shared_vocab_size(*rows, tokenizer, load_tokenizer(tiny_qwen2_dir)) == 512
    assert shared_vocab_size(*rows, tokenizer, other) is None  # no shared rows: the cross-tokenizer signal aligns by text


def test_learning_rate_schedule():
    import math

    from edgedistill.config import DistillConfig
    from edgedistill.pipeline.distill.lr_schedule import learning_rate_at

    cosine = DistillConfig(steps=110, warmup_steps=10, learning_rate=1.0, lr_schedule="cosine")
    assert [learning_rate_at(step, cosine) for step in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert learning_rate_at(10, cosine) == 1.0
    assert math.isclose(learning_rate_at(60, cosine), 0.55)  # halfway: 0.1 + 0.9 * 0.5
    assert math.isclose(learning_rate_at(110, cosine), 0.1)
    constant = DistillConfig(steps=50, warmup_steps=0, learning_rate=0.3)
    assert {learning_rate_at(step, constant) for step in range(50)} == {0.3}


def test_bf16_autocast_training_keeps_fp32_weights_and_learns(tiny_llama_dir):
    import math

    teacher, student = load_model(tiny_llama_dir), load_model(tiny_llama_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    windows = torch.randint(0, teacher.config.vocab_size, (8, 16))
    before = compare_on_heldout(student, teacher, windows)["student_teacher_val_kl"]
    log = train(student, teacher, windows, DistillConfig(steps=15, batch_size=4, learning_rate=3e-3, precision="bf16",
                                                         alpha=1.0, grad_clip=1.0), seed=0)
    assert all(p.dtype == torch.float32 for p in student.parameters())
    assert all(math.isfinite(row["loss"]) for row in log)
    assert compare_on_heldout(student, teacher, windows)["student_teacher_val_kl"] < before


def test_auto_precision_follows_the_hardware(monkeypatch):
    from edgedistill.pipeline.distill.trainer import use_bf16

    assert use_bf16("bf16", "cpu") and not use_bf16("fp32", "cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not use_bf16("auto", "cpu")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert use_bf16("auto", "cpu")
