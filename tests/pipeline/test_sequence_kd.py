"""Sequence-level KD: teacher responses -> packed windows whose sparse KD targets line up
with the tokens they predict; pinned to the plain reference losses."""


import pytest
import torch
import torch.nn.functional as F

from edgedistill.datagen.api import Sampling
from edgedistill.datagen.local import LocalTeacher
from edgedistill.hf import load_tokenizer
from edgedistill.pipeline.distill.losses import sparse_distillation_loss
from edgedistill.pipeline.distill.sequence_data import TokenMap, cot_examples, pack, response_example


@pytest.fixture(scope="module")
def teacher_rows(tiny_llama_dir):
    teacher = LocalTeacher(tiny_llama_dir)
    prompts = ["The json module", "Paths are", "A list is a", "The os module provides"]
    answers = teacher.answer([teacher.prompt_ids({"prompt": p}) for p in prompts],
                             Sampling(max_tokens=12, temperature=1.0, top_logprobs=4), seed=3)
    return [{"id": str(i), "prompt": p, **a} for i, (p, a) in enumerate(zip(prompts, answers))]


def test_each_response_token_carries_the_teachers_distribution_over_it(tiny_llama_dir, teacher_rows):
    tokenizer = load_tokenizer(tiny_llama_dir)
    row = teacher_rows[0]
    example = response_example(row, tokenizer, None)
    prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
    assert example.aligned and example.ids[:len(prompt)] == prompt and not any(example.targets[:len(prompt)])
    response = example.ids[len(prompt):]
    assert response[:len(row["logprobs"])] == [e["id"] for e in row["logprobs"]] and all(example.targets[len(prompt):])
    for entry, dist in zip(row["logprobs"], example.dists[len(prompt):]):
        assert dist == [(t, pytest.approx(lp)) for _, lp, t in entry["top"]]


def test_api_rows_map_token_texts_back_to_the_same_ids(tiny_llama_dir, teacher_rows):
    """What an API returns (texts, no ids) gives the local teacher's example back, except
    alternatives whose text is ambiguous (dropped: their mass goes to the tail)."""
    tokenizer = load_tokenizer(tiny_llama_dir)
    token_map = TokenMap(tokenizer)
    for row in teacher_rows:
        api_row = {**row, "logprobs": [{"token": e["token"], "logprob": e["logprob"],
                                        "top": [[text, lp] for text, lp, _ in e["top"]]} for e in row["logprobs"]]}
        local, remote = response_example(row, tokenizer, None), response_example(api_row, tokenizer, token_map)
        if all(token_map.get(e["token"]) is not None for e in row["logprobs"]):
            assert remote.aligned and remote.ids == local.ids
            for want, got in zip(local.dists, remote.dists):
                assert got == [(t, lp) for t, lp in (want or []) if token_map.get(tokenizer.decode([t])) == t] or (
                    want is None and got is None)
        else:  # a token with an ambiguous text: no top-k, the response re-tokenized for plain CE
            assert not remote.aligned and all(d is None for d in remote.dists)


def test_packed_windows_line_up_each_position_with_the_next_tokens_target(tiny_llama_dir, teacher_rows):
    tokenizer = load_tokenizer(tiny_llama_dir)
    examples = [response_example(row, tokenizer, None) for row in teacher_rows * 3]
    train, heldout, teacher = pack(examples, seq_len=16, k=4, validation_fraction=0.2, seed=0)
    stream_ids = [t for e in examples for t in e.ids]
    stream_dists = [d for e in examples for d in e.dists]
    by_start = {}
    for start in range(0, len(stream_ids) - 15, 16):
        by_start[tuple(stream_ids[start:start + 16])] = start
    windows = torch.cat([train.ids, heldout.ids])
    top_ids, top_lps = teacher.rows(range(len(windows)))
    for w, window in enumerate(windows):
        start = by_start[tuple(window.tolist())]
        for j in range(15):
            dist = stream_dists[start + j + 1]
            if dist:  # the teacher's alternatives for token j + 1, most likely first, padding at ~0 mass
                assert top_ids[w, j, :len(dist)].tolist() == [t for t, _ in dist]
                assert torch.allclose(top_lps[w, j, :len(dist)], torch.tensor([lp for _, lp in dist]))
                assert (top_lps[w, j, len(dist):] <= -1e4).all()
            else:  # no teacher: one-hot on the token itself
                assert top_ids[w, j, 0] == window[j + 1] and top_lps[w, j, 0] == 0
    assert teacher.aligned_share == 1.0


def test_a_one_hot_teacher_makes_the_kd_term_plain_cross_entropy():
    logits, labels = torch.randn(6, 50), torch.randint(0, 50, (6,))
    ids = labels[:, None].repeat(1, 4)
    logprobs = torch.full((6, 4), -1e4)
    logprobs[:, 0] = 0.0
    loss, parts = sparse_distillation_loss(logits, ids, logprobs, labels, alpha=1.0, temperature=1.0)
    torch.testing.assert_close(loss, F.cross_entropy(logits, labels), rtol=1e-5, atol=1e-6)


def test_cot_rows_become_two_tasks(tiny_llama_dir):
    tokenizer = load_tokenizer(tiny_llama_dir)
    row = {"prompt": "Why?", "response": "Because.\nAnswer: yes", "rationale": "Because.", "answer": "yes"}
    rationale, answer = cot_examples(row, tokenizer)
    text = tokenizer.decode
    assert text(rationale.ids).startswith("[rationale] Why?") and text(answer.ids).startswith("[answer] Why?")
    assert text([t for t, keep in zip(answer.ids, answer.targets) if keep]).startswith("yes")
