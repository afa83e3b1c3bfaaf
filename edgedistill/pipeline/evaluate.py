"""Held-out quality of a student against its teacher (torch side).

Two measurements, both teacher-forced so that small models give stable numbers:

* :class:`NextTokenTally` is the one definition of next-token perplexity (exp of the mean
  NLL pooled over scored positions, not averaged per window) and top-1 accuracy on the
  torch side; ``benchmarks/quality.py`` computes the same on runtime (numpy) logits and a
  test pins the two equal. :func:`score_windows` scores one model with it.
* :func:`compare_on_heldout`: next-token perplexity and top-1 accuracy of each model over
  held-out windows, top-1 agreement of the student with the teacher, and mean forward
  KL(p_teacher || p_student) at T = 1 in nats per token.
* :func:`qa_scores`: for question -> reference answer pairs, the model reads
  ``prompt + answer`` and is scored on the answer tokens only: perplexity of the answer
  and the share of answer tokens it predicts top-1. A documentation assistant that keeps
  the teacher's knowledge keeps these numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from edgedistill.errors import UserError
from edgedistill.pipeline.distill.losses import forward_kl_per_token

QA_BUILTINS = {"builtin:pydocs-qa": Path(__file__).parents[1] / "demo" / "data" / "pydocs" / "qa.jsonl"}


class NextTokenTally:
    """Pooled next-token NLL (nats) and top-1 hits over the positions added so far."""

    def __init__(self):
        self.nll, self.hits, self.count = 0.0, 0, 0

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``logits`` (n, V) float and ``labels`` (n,) of n scored positions; returns the
        (n,) top-1 predictions (for agreement with another model)."""
        top1 = logits.argmax(-1)
        self.nll += F.cross_entropy(logits, labels, reduction="sum").item()
        self.hits += (top1 == labels).sum().item()
        self.count += labels.numel()
        return top1

    @property
    def nll_per_token(self) -> float:
        return self.nll / max(self.count, 1)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll_per_token)

    @property
    def top1(self) -> float:
        return self.hits / max(self.count, 1)


@torch.no_grad()
def score_windows(model, windows: torch.Tensor, batch_size: int = 8, bf16: bool = False) -> dict:
    """Next-token NLL (nats/token), perplexity and top-1 accuracy of one model over (N, L)
    windows, every position but the last; ``bf16``: under CPU bf16 autocast (training-time
    checks), logits scored in fp32."""
    was_training = model.training
    model.eval()
    tally = NextTokenTally()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for batch in windows.split(batch_size):
            logits = model(batch).logits[:, :-1].float()
            tally.add(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
    model.train(was_training)
    return {"nll": tally.nll_per_token, "ppl": tally.perplexity, "top1": tally.top1, "tokens": tally.count}


@torch.no_grad()
def compare_on_heldout(student, teacher, sequences: torch.Tensor, batch_size: int = 8, split: str = "val",
                       targets: torch.Tensor | None = None, vocab_size: int | None = None) -> dict[str, float]:
    """Next-token metrics over held-out ``sequences`` (N, L), every position but the last
    (only positions whose next token is a target when ``targets`` (N, L) bool is given).

    Returns ``{student,teacher}_{split}_ppl``, ``{student,teacher}_{split}_top1``,
    ``student_teacher_top1_agreement`` and ``student_teacher_kl`` (forward KL at T = 1,
    mean over predicted positions, nats/token). The bare agreement/KL names belong to the
    test split; other splits carry theirs (``student_teacher_val_kl``), so a manifest's
    ``student_teacher_kl`` is never a training-data number. ``vocab_size``: logit columns
    compared (the shared vocabulary), all when None.
    """
    student_tally, teacher_tally, agree, kl = NextTokenTally(), NextTokenTally(), 0, 0.0
    for index, batch in enumerate(sequences.split(batch_size)):
        keep = _kept_positions(targets, index, batch_size, batch)
        labels = batch[:, 1:].reshape(-1)[keep]  # (n,)
        student_logits = student(batch).logits[:, :-1, :vocab_size].reshape(-1, _width(student, vocab_size))[keep].float()
        teacher_logits = teacher(batch).logits[:, :-1, :vocab_size].reshape(-1, _width(teacher, vocab_size))[keep].float()
        agree += (student_tally.add(student_logits, labels) == teacher_tally.add(teacher_logits, labels)).sum().item()
        kl += forward_kl_per_token(student_logits, teacher_logits, 1.0).sum().item()
    tokens = max(student_tally.count, 1)
    pair = "student_teacher" if split == "test" else f"student_teacher_{split}"
    return {
        f"student_{split}_ppl": student_tally.perplexity,
        f"teacher_{split}_ppl": teacher_tally.perplexity,
        f"student_{split}_top1": student_tally.top1,
        f"teacher_{split}_top1": teacher_tally.top1,
        f"{pair}_top1_agreement": agree / tokens,
        f"{pair}_kl": kl / tokens,
    }


def _width(model, vocab_size: int | None) -> int:
    return vocab_size or model.get_output_embeddings().out_features


def _kept_positions(targets: torch.Tensor | None, index: int, batch_size: int, batch: torch.Tensor) -> torch.Tensor:
    """Flat (B*(L-1),) mask of the positions scored in batch ``index``."""
    if targets is None:
        return torch.ones(batch.shape[0] * (batch.shape[1] - 1), dtype=torch.bool, device=batch.device)
    return targets[index * batch_size: index * batch_size + batch.shape[0], 1:].reshape(-1).to(batch.device)


@torch.no_grad()
def compare_with_topk_cache(student, sequences: torch.Tensor, topk_ids: torch.Tensor, topk_logprobs: torch.Tensor,
                            targets: torch.Tensor | None = None, vocab_size: int | None = None,
                            temperature: float = 1.0, batch_size: int = 8) -> dict[str, float]:
    """:func:`compare_on_heldout` against a cached top-k teacher (ids/log-probs (N, L-1, k)).

    The cache holds no full distribution, so teacher perplexity and the full KL are not
    available: the teacher's top-1 is the cache's first id, and ``student_teacher_val_topk_kl``
    is the (k+1)-bucket KL of ``sparse_forward_kl_per_token`` at ``temperature`` (the cache's).
    """
    from edgedistill.pipeline.distill.losses import sparse_forward_kl_per_token

    tally, teacher_hits, agree, kl = NextTokenTally(), 0, 0, 0.0
    for index, batch in enumerate(sequences.split(batch_size)):
        keep = _kept_positions(targets, index, batch_size, batch)
        rows = slice(index * batch_size, index * batch_size + batch.shape[0])
        k = topk_ids.shape[-1]
        ids = topk_ids[rows].reshape(-1, k).to(batch.device)[keep]
        logprobs = topk_logprobs[rows].reshape(-1, k).to(batch.device)[keep]
        labels = batch[:, 1:].reshape(-1)[keep]
        logits = student(batch).logits[:, :-1, :vocab_size].reshape(-1, _width(student, vocab_size))[keep].float()
        top1 = tally.add(logits, labels)
        teacher_hits += (ids[:, 0] == labels).sum().item()
        agree += (top1 == ids[:, 0]).sum().item()
        kl += sparse_forward_kl_per_token(logits, ids, logprobs, temperature).sum().item()
    tokens = max(tally.count, 1)
    return {
        "student_val_ppl": tally.perplexity,
        "student_val_top1": tally.top1,
        "teacher_val_top1": teacher_hits / tokens,
        "student_teacher_val_top1_agreement": agree / tokens,
        "student_teacher_val_topk_kl": kl / tokens,
    }


def load_qa_pairs(spec: str, limit: int = 0) -> list[dict]:
    """Rows with non-empty ``prompt`` and ``answer`` from a JSONL file or a builtin set."""
    path = QA_BUILTINS.get(spec) or Path(spec).expanduser()
    if not path.is_file():
        raise UserError(f"bench.qa_path '{spec}' is not a file; give a JSONL file of prompt/answer rows or {', '.join(QA_BUILTINS)}")
    from edgedistill.json_files import numbered_rows

    pairs = []
    for number, row in numbered_rows(path, f"bench.qa_path {path}"):
        if not isinstance(row, dict) or not row.get("prompt") or not row.get("answer"):
            raise UserError(f"bench.qa_path {path} line {number} lacks a non-empty 'prompt' and 'answer'")
        pairs.append(row)
    if not pairs:
        raise UserError(f"bench.qa_path {path} holds no QA pairs")
    return pairs[:limit] if limit else pairs


def answer_tokens(tokenizer, prompt: str, answer: str, max_len: int) -> tuple[list[int], int]:
    """Ids of ``prompt + answer`` tokenized as one text (as the model saw such text in
    training) and the index of the first answer token: the first token that ends past the
    prompt. Truncated to ``max_len`` tokens from the left of the prompt when needed."""
    try:
        encoded = tokenizer(prompt + answer, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:
        raise UserError("QA scoring needs a fast tokenizer (tokenizer.json) for answer offsets; save the teacher's "
                        "tokenizer with PreTrainedTokenizerFast") from None
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    # A normalizer may swallow the answer's characters: then no token is an answer token.
    first = next((i for i, (_, end) in enumerate(offsets) if end > len(prompt)), len(ids))
    first = max(first, 1)  # the first token has no prediction
    overflow = max(0, len(ids) - max_len)
    dropped_prompt = min(overflow, first - 1)  # drop prompt tokens first, then the answer's tail
    ids, first = ids[dropped_prompt:], first - dropped_prompt
    return ids[:max_len], first


@torch.no_grad()
def qa_scores(model, tokenizer, pairs: list[dict], max_len: int) -> dict[str, float]:
    """Teacher-forced answer scores: ``qa_ppl`` = exp(mean NLL over answer tokens),
    ``qa_top1`` = share of answer tokens predicted top-1 (pooled over all pairs)."""
    nll, hits, count = 0.0, 0, 0
    for pair in pairs:
        ids, first = answer_tokens(tokenizer, pair["prompt"], pair["answer"], max_len)
        if first >= len(ids):
            continue
        inputs = torch.tensor([ids])
        logits = model(inputs).logits[0, first - 1:-1].float()  # (A, V): predictions of the answer tokens
        targets = inputs[0, first:]
        nll += F.cross_entropy(logits, targets, reduction="sum").item()
        hits += (logits.argmax(-1) == targets).sum().item()
        count += targets.numel()
    if count == 0:
        raise UserError("no QA pair has an answer token within the context; shorten the prompts or raise data.seq_len")
    return {"qa_ppl": math.exp(nll / count), "qa_top1": hits / count, "qa_tokens": count}


def quality_report(student, teacher, tokenizer, windows: torch.Tensor | None, qa_pairs: list[dict] | None,
                   max_len: int) -> dict[str, float]:
    """The manifest's quality metrics: ``*_test_*``, agreement, KL, ``retention_top1`` and
    (with QA pairs) ``{teacher,student}_qa_{ppl,top1}`` and ``retention_qa_top1``."""
    metrics: dict[str, float] = {}
    if windows is not None:
        metrics.update(compare_on_heldout(student, teacher, windows, split="test"))
        metrics["test_tokens"] = windows.shape[0] * (windows.shape[1] - 1)
        metrics["retention_top1"] = _ratio(metrics["student_test_top1"], metrics["teacher_test_top1"])
    if qa_pairs:
        for role, model in (("teacher", teacher), ("student", student)):
            scores = qa_scores(model, tokenizer, qa_pairs, max_len)
            metrics[f"{role}_qa_ppl"], metrics[f"{role}_qa_top1"] = scores["qa_ppl"], scores["qa_top1"]
        metrics["qa_pairs"] = len(qa_pairs)
        metrics["retention_qa_top1"] = _ratio(metrics["student_qa_top1"], metrics["teacher_qa_top1"])
    return metrics


def _ratio(student: float, teacher: float) -> float:
    """Retention student / teacher; NaN when the teacher scores 0 (left out of the
    manifest's metrics, which hold finite numbers only)."""
    return student / teacher if teacher > 0 else float("nan")
