"""Cross-tokenizer KD (ULD, GOLD's hybrid): text alignment, merged distributions, the
objectives against plain loops, and the window-at-a-time fused path against the reference,
on two BPE tokenizers of different vocabularies and on the real SmolLM2 / Gemma 3 ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgedistill.demo.tiny import train_tokenizer
from edgedistill.pipeline.distill.cross_tokenizer import (
    VocabMatch, align_groups, align_window, cross_tokenizer_loss, generalized_jsd_probs, group_divergence,
    merged_logprobs, sorted_l1, window_loss,
)

TEXT = ("The tokenizer splits text into tokens. A teacher and a student may split the same text differently: "
        "distillation across tokenizers compares what each predicts for the same characters.\n\n"
        "Functions return values; classes define objects; modules group functions and classes.\n\n") * 8


@pytest.fixture(scope="module")
def tokenizers():
    return train_tokenizer(TEXT, vocab_size=300), train_tokenizer(TEXT, vocab_size=420)


def test_groups_close_where_both_sides_end_a_token_at_the_same_character():
    # student "un|believ|able" + " cat", teacher "unbeliev|able" + " c|at"; a special token (end 0) joins nothing
    student_ends, teacher_ends = [0, 2, 8, 12, 16], [0, 8, 12, 14, 16]
    assert align_groups(student_ends, teacher_ends) == [([1, 2], [1]), ([3], [2]), ([4], [3, 4])]


def test_every_group_spells_the_same_text_on_both_sides(tokenizers):
    student, teacher = tokenizers
    ids = student(TEXT, add_special_tokens=False)["input_ids"][:97]
    alignment = align_window(ids, [True] * len(ids), student, teacher, teacher.bos_token_id)
    assert int(alignment.teacher_ids[0]) == teacher.bos_token_id
    s_rows = {g: [int(r)] for g, r in enumerate(alignment.s_first)}
    t_rows = {g: [int(r)] for g, r in enumerate(alignment.t_first)}
    for row, group in zip(alignment.s_rest.tolist(), alignment.s_rest_group.tolist()):
        s_rows[group].append(row)
    for row, group in zip(alignment.t_rest.tolist(), alignment.t_rest_group.tolist()):
        t_rows[group].append(row)
    teacher_ids = alignment.teacher_ids.tolist()
    for group in s_rows:  # row r predicts token r + 1
        assert student.decode([ids[r + 1] for r in s_rows[group]]) == teacher.decode([teacher_ids[r + 1] for r in t_rows[group]])
    # every target token is in a group, but those sharing a group with token 0 (no row predicts it)
    assert len(ids) - 5 <= alignment.student_tokens <= len(ids) - 1
    assert 0 < alignment.one_to_one < len(s_rows)  # the vocabularies differ: some groups are n:m


def test_merged_log_distribution_is_the_chain_rule_over_the_group():
    logprobs = torch.log_softmax(torch.randn(5, 7), -1)
    labels = torch.tensor([3, 1, 6, 0, 2])
    first, rest, rest_group = torch.tensor([0, 3]), torch.tensor([1, 2, 4]), torch.tensor([0, 0, 1])
    merged = merged_logprobs(logprobs, labels, first, rest, rest_group)
    assert torch.allclose(merged[0], logprobs[0] + logprobs[1, 1] + logprobs[2, 6])
    assert torch.allclose(merged[1], logprobs[3] + logprobs[4, 2])


@pytest.mark.parametrize("widths", [(7, 11), (11, 7), (1, 5), (6, 6)])
def test_sorted_l1_pads_the_narrower_vocabulary_with_zeros(widths):
    student, teacher = torch.rand(3, widths[0]), torch.rand(3, widths[1])
    expected = []
    for s, t in zip(student.numpy(), teacher.numpy()):
        s, t = sorted(s, reverse=True), sorted(t, reverse=True)
        s, t = s + [0.0] * (len(t) - len(s)), t + [0.0] * (len(s) - len(t))
        expected.append(sum(abs(a - b) for a, b in zip(s, t)))
    assert np.allclose(sorted_l1(student, teacher).numpy(), expected, atol=1e-6)


def test_uld_ignores_which_ids_carry_the_mass():
    probs = torch.softmax(torch.randn(2, 9), -1)
    permuted = probs[:, torch.randperm(9)]
    assert torch.allclose(sorted_l1(probs, F_pad(permuted, 4)), torch.zeros(2), atol=1e-6)


def F_pad(x, extra):
    return torch.nn.functional.pad(x, (0, extra))


def test_generalized_jsd_endpoints_are_the_two_kls():
    s, t = torch.log_softmax(torch.randn(4, 6), -1), torch.log_softmax(torch.randn(4, 6), -1)
    forward = (t.exp() * (t - s)).sum(-1)
    reverse = (s.exp() * (s - t)).sum(-1)
    assert torch.allclose(generalized_jsd_probs(s, t, 0.0), forward)
    assert torch.allclose(generalized_jsd_probs(s, t, 1.0), reverse)
    mid = generalized_jsd_probs(s, t, 0.5)
    m = torch.log(0.5 * s.exp() + 0.5 * t.exp())
    assert torch.allclose(mid, 0.5 * (t.exp() * (t - m)).sum(-1) + 0.5 * (s.exp() * (s - m)).sum(-1), atol=1e-6)


def test_gold_splits_matched_columns_from_the_sorted_rest(tokenizers):
    student, teacher = tokenizers
    match = VocabMatch(teacher, student)
    assert 0 < match.matched < len(student)
    for t_id, s_id in zip(match.teacher_ids[:50].tolist(), match.student_ids[:50].tolist()):
        assert teacher.decode([t_id]) == student.decode([s_id])
    s_log = torch.log_softmax(torch.randn(3, len(student)), -1)
    t_log = torch.log_softmax(torch.randn(3, len(teacher)), -1)
    got = group_divergence("gold", s_log, t_log, match, beta=0.5)
    keep_s = torch.ones(len(student), dtype=torch.bool)
    keep_s[match.student_ids] = False
    keep_t = torch.ones(len(teacher), dtype=torch.bool)
    keep_t[match.teacher_ids] = False
    w = match.matched / len(teacher)
    matched = generalized_jsd_probs(s_log[:, match.student_ids].clamp(min=np.log(1e-8)),
                                    t_log[:, match.teacher_ids].clamp(min=np.log(1e-8)), 0.5)
    expected = w * matched + (1 - w) * sorted_l1(s_log[:, keep_s].exp(), t_log[:, keep_t].exp())
    assert torch.allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("objective", ["uld", "gold"])
def test_the_fused_path_equals_the_reference_in_value_and_gradients(tokenizers, objective):
    student, teacher = tokenizers
    ids = student(TEXT, add_special_tokens=False)["input_ids"]
    length, windows = 23, 3  # odd sizes; teacher lengths differ per window
    rows = [ids[i * length:(i + 1) * length] for i in range(windows)]
    targets = [[True] * length for _ in rows]
    targets[1][:9] = [False] * 9  # a prompt: no groups, no CE there
    alignments = [align_window(r, t, student, teacher, teacher.bos_token_id) for r, t in zip(rows, targets)]
    labels = torch.tensor([[tok if keep else -100 for tok, keep in zip(r[1:], t[1:])] for r, t in zip(rows, targets)]).view(-1)
    longest = max(a.teacher_ids.numel() for a in alignments)
    student_hidden = torch.randn(windows * (length - 1), 8, requires_grad=True)
    student_weight = torch.randn(len(student), 8, requires_grad=True)
    teacher_hidden, teacher_weight = torch.randn(windows, longest, 5), torch.randn(len(teacher), 5)
    match = VocabMatch(teacher, student)
    num_tokens = int((labels != -100).sum())
    settings = dict(objective=objective, alpha=0.3, temperature=2.0, beta=0.5, match=match)

    fused = cross_tokenizer_loss(student_hidden, student_weight, teacher_hidden, teacher_weight, labels, alignments,
                                 **settings)
    fused.backward()
    grads = student_hidden.grad.clone(), student_weight.grad.clone()
    student_hidden.grad = student_weight.grad = None
    reference = sum(window_loss(student_hidden[w * (length - 1):(w + 1) * (length - 1)] @ student_weight.T,
                                teacher_hidden[w, :alignments[w].teacher_ids.numel() - 1] @ teacher_weight.T,
                                labels[w * (length - 1):(w + 1) * (length - 1)], alignments[w], num_tokens=num_tokens,
                                **settings) for w in range(windows))
    reference.backward()
    assert torch.allclose(fused, reference, rtol=1e-5)
    assert torch.allclose(grads[0], student_hidden.grad, atol=1e-6)
    assert torch.allclose(grads[1], student_weight.grad, atol=1e-6)
    assert alignments[1].s_first.min() >= 8  # groups start where the targets do


def test_identical_models_through_identical_tokenizers_give_zero_uld(tokenizers):
    student, _ = tokenizers
    ids = student(TEXT, add_special_tokens=False)["input_ids"][:31]
    alignment = align_window(ids, [True] * 31, student, student, None)
    logits = torch.randn(30, len(student))
    loss = window_loss(logits, logits, torch.tensor(ids[1:]), alignment, objective="uld", alpha=1.0, temperature=1.0,
                       beta=0.5, match=None, num_tokens=30)
    assert alignment.one_to_one == alignment.s_first.numel() == 30
    assert float(loss) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
def test_real_smollm2_text_aligns_with_gemma3_almost_token_for_token():
    """Measured on the shipped docs: the claim that these two tokenizers can be distilled
    across rests on most student tokens falling in small groups."""
    from transformers import AutoTokenizer

    from edgedistill.data import load_documents, window_bos
    from edgedistill.pipeline.gguf_teacher import REAL_MODEL_BUILTINS, import_gguf

    student = AutoTokenizer.from_pretrained(import_gguf(REAL_MODEL_BUILTINS["smollm2-135m-instruct"].locate()))
    teacher = AutoTokenizer.from_pretrained(import_gguf(REAL_MODEL_BUILTINS["gemma3-270m"].locate()))
    text = "\n\n".join(load_documents("builtin:pydocs")[:40])
    ids = student(text, add_special_tokens=False)["input_ids"]
    alignments = [align_window(ids[i:i + 128], [True] * 128, student, teacher, window_bos(teacher))
                  for i in range(0, 128 * 16, 128)]
    covered = sum(a.student_tokens for a in alignments) / (16 * 127)
    one_to_one = sum(a.one_to_one for a in alignments) / sum(a.s_first.numel() for a in alignments)
    assert covered > 0.97 and one_to_one > 0.85, (covered, one_to_one)
    match = VocabMatch(teacher, student)
    assert match.matched > 0.5 * len(student)  # " the" is " the" in both, whatever the raw token strings
