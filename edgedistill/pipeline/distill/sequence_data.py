"""Sequence-level KD data: the teacher's responses as packed training windows, with the
teacher's top-k log-probabilities aligned to every response token.

Each kept row of a generate-data file becomes one example: prompt tokens (context, not
targets), then the response tokens and, when the teacher stopped by itself, EOS (targets).
The KD target of each response token is sparse (``losses.sparse_forward_kl_per_token``):

* the teacher's returned alternatives ``top`` (ids from the local teacher, or API token
  texts mapped to ids by :class:`TokenMap`; a sampled token whose text is ambiguous (a
  byte piece) is matched through the re-tokenized response; alternatives that map to no
  single id are dropped, their mass lands in the tail bucket);
* a token with a logprob but no alternatives: that token alone (k = 1);
* no logprobs at all, or a response whose tokens cannot be mapped back exactly (another
  tokenizer): one-hot on the token (logprob 0), which makes the KD term equal CE there,
  i.e. plain sequence-level KD (Kim & Rush, 2016).

The log-probabilities are the teacher's at T = 1 (what APIs return), so the sequence mode
trains at ``distill.temperature`` = 1. Examples are joined and cut into windows as
``data.packed_examples`` does; window w's KD targets are ``teacher.rows([w])``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edgedistill.errors import UserError
from edgedistill.data import Packed
from edgedistill.pipeline.distill.losses import LOGPROB_FLOOR

COT_TASK_PREFIXES = {"rationale": "[rationale] ", "answer": "[answer] "}


class TokenMap:
    """Token text -> id for every id whose text decodes uniquely (API logprobs name tokens
    by text). Built once over the vocabulary."""

    def __init__(self, tokenizer):
        self.texts = [tokenizer.decode([token]) for token in range(len(tokenizer))]
        seen: dict[str, int] = {}
        ambiguous: set[str] = set()
        for token, text in enumerate(self.texts):
            if text in seen:
                ambiguous.add(text)
            seen.setdefault(text, token)
        self.ids = {text: token for text, token in seen.items() if text not in ambiguous}

    def get(self, text: str) -> int | None:
        return self.ids.get(text)

    def matches(self, text: str, token: int) -> bool:
        """Whether a token the API names by ``text`` can be ``token`` (which we sent): true
        for ambiguous texts too (byte pieces, specials), where :meth:`get` gives None."""
        return 0 <= token < len(self.texts) and self.texts[token] == text


@dataclass
class Example:
    ids: list[int]
    targets: list[bool]
    dists: list[list[tuple[int, float]] | None]  # per token: the teacher's sparse distribution over it, or None
    aligned: bool  # the teacher's own tokens (top-k usable), not a re-tokenization


def response_example(row: dict, tokenizer, token_map: TokenMap | None) -> Example:
    """One kept generate-data row (with ``prompt``) as an :class:`Example`."""
    eos = tokenizer.eos_token_id
    prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
    entries = row.get("logprobs") or []
    ids = _teacher_ids(entries, token_map, tokenizer, row["response"])
    dists: list | None = None
    if ids is not None and tokenizer.decode([t for t in ids if t != eos]) == row["response"]:
        dists = [_dist(entry, token, token_map) for entry, token in zip(entries, ids)]
    else:
        ids = tokenizer(row["response"], add_special_tokens=False)["input_ids"]
    if row.get("finish_reason") == "stop" and (not ids or ids[-1] != eos):
        ids = [*ids, eos]
        if dists is not None:
            dists.append(None)
    return Example(prompt + ids, [False] * len(prompt) + [True] * len(ids),
                   [None] * len(prompt) + (dists or [None] * len(ids)), dists is not None)


def _teacher_ids(entries: list[dict], token_map: TokenMap | None, tokenizer, response: str) -> list[int] | None:
    """The ids of the teacher's tokens: given (local teacher), mapped from their texts, or,
    when a text is ambiguous (a byte piece), the re-tokenized response if its tokens have
    the teacher's texts position by position (None when neither works)."""
    if not entries:
        return None
    ids = [entry.get("id") if entry.get("id") is not None else (token_map.get(entry["token"]) if token_map else None)
           for entry in entries]
    if all(token is not None for token in ids):
        return ids
    if token_map is None:
        return None
    again = tokenizer(response, add_special_tokens=False)["input_ids"]
    texts = [entry["token"] for entry in entries]
    if texts and texts[-1] == token_map.texts[tokenizer.eos_token_id] and len(again) == len(texts) - 1:
        again = [*again, tokenizer.eos_token_id]
    if len(again) == len(texts) and all(token_map.matches(text, token) for text, token in zip(texts, again)):
        return again
    return None


def _dist(entry: dict, token: int, token_map: TokenMap | None) -> list[tuple[int, float]]:
    found: dict[int, float] = {}
    for alternative in entry.get("top") or []:
        alt_id = alternative[2] if len(alternative) > 2 else (token_map.get(alternative[0]) if token_map else None)
        if alt_id is not None and alt_id not in found:
            found[alt_id] = float(alternative[1])
    if not found and entry.get("logprob") is not None:
        found[token] = float(entry["logprob"])
    return sorted(found.items(), key=lambda item: -item[1])


def cot_examples(row: dict, tokenizer) -> list[Example]:
    """"Distilling step-by-step" tasks of a row with a rationale and an answer: the prompt
    with a task prefix -> the rationale, and -> the answer (CE only: the split has no
    token-aligned teacher distribution)."""
    found = []
    for task, prefix in COT_TASK_PREFIXES.items():
        if row.get(task):
            found.append(response_example({"prompt": prefix + row["prompt"], "response": row[task], "finish_reason": "stop"},
                                          tokenizer, None))
    return found


class SparseTeacher:
    """In-memory top-k teacher over packed windows, read like ``TeacherCache``:
    ``rows(window_indices)`` -> (ids (B, L-1, k) long, log-probs (B, L-1, k) fp32)."""

    temperature = 1.0

    def __init__(self, ids: np.ndarray, logprobs: np.ndarray, aligned_share: float):
        self.ids, self.logprobs, self.aligned_share = ids, logprobs, aligned_share

    def rows(self, window_indices) -> tuple[torch.Tensor, torch.Tensor]:
        index = np.asarray([int(i) for i in window_indices])
        return torch.from_numpy(self.ids[index].astype(np.int64)), torch.from_numpy(self.logprobs[index])

    @property
    def bytes_per_token(self) -> float:
        return float(self.ids.itemsize + self.logprobs.itemsize) * self.ids.shape[-1]

    def mean_tail_mass(self) -> float:
        mass = np.exp(self.logprobs.astype(np.float64)).sum(-1)
        return float(np.clip(1.0 - mass, 0.0, 1.0).mean())


def set_sparse(ids_row: np.ndarray, logprobs_row: np.ndarray, dist: list[tuple[int, float]]) -> None:
    """Write a sparse teacher distribution (most likely first) into one (k,) row pair; the
    slots it does not fill repeat its first token at ~0 mass (zero mass on a counted token)."""
    dist = dist[:len(ids_row)]
    ids_row[:len(dist)] = [t for t, _ in dist]
    logprobs_row[:len(dist)] = [lp for _, lp in dist]
    ids_row[len(dist):] = dist[0][0]
    logprobs_row[len(dist):] = LOGPROB_FLOOR


def pack(examples: list[Example], seq_len: int, k: int, validation_fraction: float, seed: int):
    """(train Packed, held-out Packed, SparseTeacher over train then held-out windows)."""
    ids = [t for e in examples for t in e.ids]
    targets = [t for e in examples for t in e.targets]
    dists = [d for e in examples for d in e.dists]
    count = len(ids) // seq_len
    if count < 2:
        raise UserError(f"the teacher's responses give {len(ids)} tokens: fewer than two windows of data.seq_len={seq_len}; "
                        "generate more (distill.sequence.windows) or lower data.seq_len")
    top_ids = np.repeat(np.asarray(ids, dtype=np.int32)[:, None], k, axis=1)  # one-hot on the token by default
    top_lps = np.full((len(ids), k), LOGPROB_FLOOR, dtype=np.float32)
    top_lps[:, 0] = 0.0
    for position, dist in enumerate(dists):
        if dist:
            set_sparse(top_ids[position], top_lps[position], dist)
    cut = count * seq_len
    window_ids = torch.tensor(ids[:cut]).view(count, seq_len)
    window_targets = torch.tensor(targets[:cut]).view(count, seq_len)
    # window position j predicts token j + 1: its KD target is token j + 1's distribution
    teacher_ids = top_ids[:cut].reshape(count, seq_len, k)[:, 1:]
    teacher_lps = top_lps[:cut].reshape(count, seq_len, k)[:, 1:]
    keep = window_targets[:, 1:].any(dim=1).numpy()
    order = torch.randperm(int(keep.sum()), generator=torch.Generator().manual_seed(seed)).numpy()
    kept = np.flatnonzero(keep)[order]
    held = max(1, int(len(kept) * validation_fraction))
    packed = Packed(window_ids[kept], window_targets[kept])
    aligned = sum(len(e.ids) for e in examples if e.aligned) / max(1, len(ids))
    return packed[:-held], packed[-held:], SparseTeacher(teacher_ids[kept], teacher_lps[kept], aligned)
