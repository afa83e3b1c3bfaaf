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
    assert before["student_teacher_kl"] < 1e-6  # identical weights at the start
    assert not student.training


def test_the_fused_batch_loss_equals_the_reference_on_materialized_logits(tiny_llama_dir, tiny_qwen2_dir):
    from edgedistill.pipeline.distill.losses import distillation_loss
    from edgedistill.pipeline.distill.stage import kd_batch_loss, kd_settings

    cfg = DistillConfig(alpha=0.4, temperature=2.0, objective="jsd", beta=0.3)
    teacher, batch = load_model(tiny_qwen2_dir), torch.randint(0, 512, (3, 11))
    fused_student, plain_student = load_model(tiny_llama_dir), load_model(tiny_llama_dir)

    fused = kd_batch_loss(fused_student, teacher, batch, kd_settings(cfg))
    fused.backward()
    labels = batch[:, 1:].reshape(-1)
    with torch.no_grad():
        teacher_logits = teacher(batch).logits[:, :-1].reshape(labels.numel(), -1)
    plain, _ = distillation_loss(plain_student(batch).logits[:, :-1].reshape(labels.numel(), -1), teacher_logits, labels,
                                 alpha=0.4, temperature=2.0, objective="jsd", beta=0.3)
    plain.backward()

    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    for (name, fused_param), plain_param in zip(fused_student.named_parameters(), plain_student.parameters()):
        torch.testing.assert_close(fused_param.grad, plain_param.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_vocab_sharing_rules(tiny_llama_dir, tiny_qwen2_dir):
    import pytest
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from edgedistill.errors import UserError
    from edgedistill.hf import load_tokenizer
    from edgedistill.pipeline.distill.stage import shared_vocab_size

    llama, qwen2 = load_model(tiny_llama_dir), load_model(tiny_qwen2_dir)
    tokenizer = load_tokenizer(tiny_llama_dir)
    llama.resize_token_embeddings(576)  # padded embedding rows, same tokenizer
    other = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tokenizer.backend_tokenizer.to_str()))
    other.add_tokens(["<|extra|>"])

    assert shared_vocab_size(llama, qwen2, tokenizer, load_tokenizer(tiny_qwen2_dir)) == 512
    with pytest.raises(UserError, match="tokenizers differ"):
        shared_vocab_size(llama, qwen2, tokenizer, other)
