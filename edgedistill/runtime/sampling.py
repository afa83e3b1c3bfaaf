"""Token sampling shared by every backend (numpy only), so settings mean the same everywhere.

Order of operations on one row of logits: repetition penalty (CTRL, Keskar et al. 2019:
positive logits of seen tokens divided by the penalty, negative ones multiplied; "seen"
= prompt and generated tokens) -> OpenAI's frequency and presence penalties over the
generated tokens only (``logit[j] -= count[j] * frequency + (count[j] > 0) * presence``) ->
greedy argmax if ``temperature == 0`` -> divide by temperature -> keep the ``top_k``
highest -> keep the smallest set whose probability reaches ``top_p`` (nucleus, Holtzman
et al. 2020) -> draw with the request's seeded generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p", "repetition_penalty", "frequency_penalty", "presence_penalty"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")
        for name in ("frequency_penalty", "presence_penalty"):
            if not -2 <= getattr(self, name) <= 2:
                raise ValueError(f"{name} must be in [-2, 2] (0 = off), got {getattr(self, name)}")


def apply_repetition_penalty(logits: np.ndarray, seen: list[int], penalty: float) -> np.ndarray:
    if penalty == 1.0 or not seen:
        return logits
    logits = logits.copy()
    ids = np.unique(np.asarray(seen))
    values = logits[ids]
    logits[ids] = np.where(values > 0, values / penalty, values * penalty)
    return logits


def apply_openai_penalties(logits: np.ndarray, generated: list[int], frequency: float, presence: float) -> np.ndarray:
    if (frequency == 0 and presence == 0) or not generated:
        return logits
    ids, counts = np.unique(np.asarray(generated), return_counts=True)
    logits = logits.copy()
    logits[ids] -= counts * frequency + presence
    return logits


def sample_token(logits: np.ndarray, seen: list[int], params: SamplingParams, rng: np.random.Generator,
                 generated: list[int] = ()) -> int:
    """One token id from a (V,) row of logits; ``seen`` = prompt + generated ids,
    ``generated`` = the completion's ids so far."""
    logits = apply_repetition_penalty(np.asarray(logits, dtype=np.float64), seen, params.repetition_penalty)
    logits = apply_openai_penalties(logits, list(generated), params.frequency_penalty, params.presence_penalty)
    if params.temperature == 0:
        return int(np.argmax(logits))
    logits = (logits - logits.max()) / params.temperature  # max first: a tiny temperature gives -inf, never nan
    if 0 < params.top_k < logits.size:
        cutoff = np.partition(logits, -params.top_k)[-params.top_k]
        logits = np.where(logits >= cutoff, logits, -np.inf)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    if params.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cumulative, params.top_p)) + 1]
        mask = np.zeros_like(probs, dtype=bool)
        mask[keep] = True
        probs = np.where(mask, probs, 0.0)
        probs /= probs.sum()
    return int(rng.choice(probs.size, p=probs))


def top_logprobs(logits: np.ndarray, token: int, count: int) -> tuple[float, tuple[tuple[int, float], ...]]:
    """The model's own log-probabilities at this position: log-softmax of the raw logits at
    T = 1, before any penalty, temperature or truncation (what a distillation student
    needs of a teacher; vLLM's "raw" logprobs). Returns (logprob of ``token``, the
    ``count`` most likely (id, logprob) pairs, most likely first, ties by lower id)."""
    row = np.asarray(logits, dtype=np.float64)
    shifted = row - row.max()
    logprobs = shifted - math.log(np.exp(shifted).sum())
    count = min(count, logprobs.size)
    best = np.argpartition(-logprobs, count - 1)[:count] if count else np.array([], dtype=np.int64)
    best = sorted(best.tolist(), key=lambda i: (-logprobs[i], i))
    return float(logprobs[token]), tuple((int(i), float(logprobs[i])) for i in best)
