"""The backend-independent model API: encode, sample, stream, time.

A backend implements five things: ``encode``, ``decode``, ``reset``, ``_append`` (feed
tokens after the cached ones, return the last position's logits) and ``_all_logits``
(all positions for fixed ids, for parity checks), and sets ``context_length``. Sampling, stop strings, streaming and
timings live here once, so both backends behave the same.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from edgedistill.runtime.sampling import SamplingParams, sample_token


@dataclass(frozen=True)
class Timings:
    """Wall-clock facts of one generation. ttft includes prefill and the first sample."""

    prompt_tokens: int
    ttft_s: float
    decode_steps: int  # forward passes after the first token
    decode_s: float

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.ttft_s if self.ttft_s > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_steps / self.decode_s if self.decode_s > 0 else 0.0

    @property
    def per_token_s(self) -> float:
        return self.decode_s / self.decode_steps if self.decode_steps else 0.0


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: list[int]
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (max_tokens)
    timings: Timings


@dataclass(frozen=True)
class StreamChunk:
    """One decoded token; ``text`` is the new printable text (may be empty mid-character)."""

    token: int | None
    text: str
    completion: Completion | None = field(default=None)  # set on the last chunk only


class Model(ABC):
    """A loaded artifact. Not thread-safe: one generation at a time per instance."""

    format: str = ""
    eos_token_id: int | None = None
    context_length: int = 0  # tokens the KV cache holds (prompt + generated); set by each backend

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def decode(self, token_ids: Sequence[int]) -> str: ...

    @abstractmethod
    def reset(self) -> None:
        """Forget the KV cache."""

    @abstractmethod
    def _append(self, token_ids: Sequence[int]) -> np.ndarray:
        """Run ``token_ids`` after the cached ones; (V,) logits of the last position."""

    @abstractmethod
    def _all_logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """(T, V) fp32 logits for every position, from an empty cache."""

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """(T, V) fp32 logits for every position of ``token_ids`` from an empty cache."""
        if not 0 < len(token_ids) <= self.context_length:
            raise ValueError(f"logits need 1 to {self.context_length} tokens (the model's context), got {len(token_ids)}")
        return self._all_logits(token_ids)

    def generate(self, prompt: str | Sequence[int], **kwargs) -> Completion:
        """Generate to completion; same arguments as :meth:`stream`."""
        for chunk in self.stream(prompt, **kwargs):
            if chunk.completion is not None:
                return chunk.completion
        raise RuntimeError("stream ended without a completion")  # unreachable: stream always finishes

    def stream(
        self,
        prompt: str | Sequence[int],
        max_tokens: int = 128,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        ignore_eos: bool = False,
    ) -> Iterator[StreamChunk]:
        """Yield a chunk per generated token; the last chunk carries the Completion.

        ``prompt`` is text or token ids. Greedy when ``temperature == 0``. Generation ends
        at EOS (unless ``ignore_eos``), at a stop string (excluded from the text), after
        ``max_tokens``, or when the context is full (both ``"length"``).
        """
        params = SamplingParams(temperature, top_k, top_p, repetition_penalty, seed)
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        prompt_ids = self.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not prompt_ids:
            raise ValueError("prompt is empty: give at least one token")
        if len(prompt_ids) >= self.context_length:
            raise ValueError(f"prompt has {len(prompt_ids)} tokens; the model's context holds {self.context_length}")
        rng = np.random.default_rng(seed)
        started = time.perf_counter()
        self.reset()
        logits = self._append(prompt_ids)
        generated: list[int] = []
        text, emitted, finish, first_at, steps = "", 0, "length", 0.0, 0
        while True:
            token = sample_token(logits, prompt_ids + generated, params, rng)
            first_at = first_at or time.perf_counter()
            if token == self.eos_token_id and not ignore_eos:
                finish = "stop"
                break
            generated.append(token)
            text = self.decode(generated)
            cut = _first_stop(text, stop)
            if cut is not None:
                text, finish = text[:cut], "stop"
            ready = len(text) if finish == "stop" else _printable_length(text, stop)
            yield StreamChunk(token, text[emitted:ready])
            emitted = max(emitted, ready)
            if finish == "stop" or len(generated) >= max_tokens or len(prompt_ids) + len(generated) >= self.context_length:
                break  # "length": max_tokens reached or the context is full
            logits = self._append([token])
            steps += 1
        timings = Timings(len(prompt_ids), first_at - started, steps, time.perf_counter() - first_at)
        yield StreamChunk(None, text[emitted:], Completion(text, generated, finish, timings))


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    positions = [text.find(s) for s in stops if s and s in text]
    return min(positions) if positions else None


def _printable_length(text: str, stops: Sequence[str]) -> int:
    """Length of ``text`` safe to emit: no half-decoded character, no possible stop prefix."""
    end = len(text.rstrip("\ufffd"))
    hold = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, end), 0, -1):
            if text[end - size: end] == stop[:size]:
                hold = max(hold, size)
                break
    return end - hold
