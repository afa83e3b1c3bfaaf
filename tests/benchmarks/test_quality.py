"""Teacher-forced scores through the runtime, pinned to the torch evaluation's numbers."""

import numpy as np
import pytest
import torch

from edgedistill.benchmarks.quality import score
from edgedistill.hf import load_model, load_tokenizer
from edgedistill.pipeline.evaluate import answer_tokens, compare_on_heldout, qa_scores
from edgedistill.runtime import load

QA = [{"prompt": "What is JSON?\n\n", "answer": "A lightweight data interchange format."},
      {"prompt": "Paths\n\n", "answer": "Classes representing filesystem paths."}]


@pytest.fixture(scope="module")
def pair(tiny_llama_dir, tiny_mistral_dir):
    return load(tiny_mistral_dir, backend="hf"), load(tiny_llama_dir, backend="hf")


def test_scores_equal_the_torch_evaluation(pair, tiny_llama_dir, tiny_mistral_dir):
    student, teacher = pair
    windows = torch.randint(0, teacher.vocab_size, (3, 24), generator=torch.Generator().manual_seed(0))
    tokenizer = load_tokenizer(tiny_llama_dir)
    qa = [answer_tokens(tokenizer, p["prompt"], p["answer"], 64) for p in QA]
    got = score(student, teacher, windows.tolist(), qa, teacher.vocab_size)
    reference = compare_on_heldout(load_model(tiny_mistral_dir), load_model(tiny_llama_dir), windows, split="test")
    assert got["perplexity"] == pytest.approx(reference["student_test_ppl"], rel=1e-4)
    assert got["top1_accuracy"] == pytest.approx(reference["student_test_top1"])
    assert got["top1_agreement"] == pytest.approx(reference["student_teacher_top1_agreement"])
    # forward KL(p_teacher || p_student), nats/token: the direction the distillation minimizes
    assert got["kl_to_teacher"] == pytest.approx(reference["student_teacher_kl"], rel=1e-4)
    assert got["qa_top1"] == pytest.approx(qa_scores(load_model(tiny_mistral_dir), tokenizer, QA, 64)["qa_top1"])
    assert got["eval_positions"] == 3 * 23 and 0 <= got["ece"] <= 1


def test_the_teacher_against_itself_agrees_fully(pair):
    _, teacher = pair
    windows = np.random.default_rng(1).integers(0, teacher.vocab_size, (2, 16)).tolist()
    got = score(teacher, teacher, windows, [], teacher.vocab_size)
    assert got["top1_agreement"] == 1.0 and got["kl_to_teacher"] == 0.0 and got["qa_top1"] is None
