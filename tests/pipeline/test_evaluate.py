import math

import torch

from edgedistill.hf import load_model
from edgedistill.pipeline.evaluate import compare_on_heldout


def test_a_model_compared_with_itself(tiny_llama_dir):
    model = load_model(tiny_llama_dir)
    sequences = torch.randint(0, model.config.vocab_size, (3, 17))

    metrics = compare_on_heldout(model, model, sequences, batch_size=2)

    with torch.no_grad():
        logits = model(sequences).logits[:, :-1]  # (B, L-1, V)
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), sequences[:, 1:].reshape(-1))
    assert metrics["student_teacher_top1_agreement"] == 1.0
    assert abs(metrics["student_teacher_kl"]) < 1e-6
    assert math.isclose(metrics["student_val_ppl"], math.exp(nll.item()), rel_tol=1e-5)
    assert metrics["student_val_ppl"] == metrics["teacher_val_ppl"]
    assert 0.0 <= metrics["student_val_top1"] <= 1.0
