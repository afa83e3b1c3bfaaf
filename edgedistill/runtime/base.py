"""The backend-independent model API: encode, sample, stream, time.

A backend implements five things: ``encode``, ``decode``, ``reset``, ``_append`` (feed
tokens after the cached ones, return the last position's logits) and ``_all_logits``
(all positions for fixed ids, for parity checks), and sets ``context_length``,
``vocab_size``, ``eos_token_id`` and ``chat_template``. Chat rendering, sampling, stop
strings, streaming and timings live here once, so both backends behave the same.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple, Sequence, Union

import numpy as np

from edgedistill.runtime.chat import ChatTemplate
from edgedistill.runtime.sampling import SamplingParams, sample_token, top_logprobs


class PreparedPrompt(NamedTuple):
    """A prompt as token ids, with the stop strings it implies (a chat turn's end)."""

    ids: list[int]
    stops: tuple[str, ...] = ()


Prompt = Union[str, Sequence[int], Sequence[dict], PreparedPrompt]  # text, token ids, chat messages, or prepared


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
class TokenLogprob:
    """A generated token's log-probability and the position's most likely alternatives, from
    the raw logits at T = 1 (``sampling.top_logprobs``)."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...]  # (token id, logprob), most likely first


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: list[int]  # generated tokens (EOS / end-of-turn token excluded)
    finish_reason: str  # "stop" (EOS, end of turn or a stop string), "length" (max_tokens or full context), "cancelled"
    timings: Timings
    logprobs: tuple[TokenLogprob, ...] | None = None  # one per generated token when asked for


@dataclass(frozen=True)
class StreamChunk:
    """One decoded token; ``text`` is the new printable text (may be empty mid-character)."""

    token: int | None
    text: str
    completion: Completion | None = field(default=None)  # set on the last chunk only
    logprob: TokenLogprob | None = None  # when the stream was asked for logprobs


class Model(ABC):
    """A loaded artifact. Not thread-safe: one generation at a time per instance."""

    format: str = ""
    eos_token_id: int | None = None
    end_token_ids: frozenset[int] = frozenset()  # every id that ends generation (EOS, end of turn); set by backends
    context_length: int = 0  # tokens the KV cache holds (prompt + generated); set by each backend
    vocab_size: int = 0  # logit rows; token ids of a prompt must be below it
    chat_template: ChatTemplate | None = None  # from the artifact; None when it has none
    bos_token: str = ""  # special-token texts a chat template may refer to
    eos_token: str = ""
    # ids a text prompt opens with: BOS for models whose tokenizer adds one (Gemma, Llama 3),
    # as their HF tokenizer and llama.cpp do; a chat template writes its own
    bos_prefix: tuple[int, ...] = ()

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

    def prompt_logprobs(self, token_ids: Sequence[int], count: int) -> list[TokenLogprob]:
        """Log-probabilities of ``token_ids[1:]`` given what precedes each (the first token has
        no context), with ``count`` alternatives, as ``stream(logprobs=count)`` gives them
        for generated tokens: raw log-softmax at T = 1. What a teacher behind an API needs to
        score text it did not write (completions ``echo`` + ``logprobs``)."""
        logits = self.logits(token_ids)  # (T, V)
        return [TokenLogprob(int(token), *top_logprobs(logits[position], int(token), count))
                for position, token in enumerate(token_ids[1:])]

    def prepare(self, prompt: Prompt) -> PreparedPrompt:
        """Token ids of a prompt (text, token ids or chat messages) and the stop strings it
        implies: a chat prompt ends its turn where the template ends an assistant message.
        Thread-safe (tokenizer only), so a server can check lengths before queueing."""
        if isinstance(prompt, PreparedPrompt):
            return prompt
        if isinstance(prompt, str):
            return PreparedPrompt([*self.bos_prefix, *self.encode(prompt)])
        items = list(prompt)
        if items and all(isinstance(item, dict) for item in items):
            turn_end = self.require_chat_template().turn_end
            return PreparedPrompt(self.encode(self.render_chat(items)), (turn_end,) if turn_end else ())
        if all(isinstance(item, (int, np.integer)) and not isinstance(item, bool) for item in items):
            ids = [int(item) for item in items]
            bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
            if bad is not None:
                raise ValueError(f"token id {bad} is outside the vocabulary (0 to {self.vocab_size - 1})")
            return PreparedPrompt(ids)
        raise ValueError("prompt must be text, a list of token ids, or a list of chat messages")

    def require_chat_template(self) -> ChatTemplate:
        if self.chat_template is None:
            raise ValueError("this model has no chat template: send plain text instead, or supply one "
                             "(load(..., chat_template=...) or the CLI's --chat-template: Jinja text/file or 'chatml')")
        return self.chat_template

    def render_chat(self, messages: Sequence[dict]) -> str:
        """The prompt text the model's chat template makes of ``messages`` (with the
        assistant header, ready for generation)."""
        return self.require_chat_template().render(messages, add_generation_prompt=True)

    def generate(self, prompt: Prompt, **kwargs) -> Completion:
        """Generate to completion; same arguments as :meth:`stream`."""
        for chunk in self.stream(prompt, **kwargs):
            if chunk.completion is not None:
                return chunk.completion
        raise RuntimeError("stream ended without a completion")  # unreachable: stream always finishes

    def stream(
        self,
        prompt: Prompt,
        max_tokens: int = 128,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        ignore_eos: bool = False,
        cancel: Callable[[], bool] | None = None,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        logprobs: int | None = None,
    ) -> Iterator[StreamChunk]:
        """Yield a chunk per generated token; the last chunk carries the Completion.

        ``prompt`` is text, token ids, or chat messages (rendered with the artifact's chat
        template; the template's end-of-turn text then stops generation too). Greedy when
        ``temperature == 0``. Generation ends at EOS (unless ``ignore_eos``), at a stop
        string (excluded from the text), after ``max_tokens`` or when the context is full
        (both ``"length"``), or when ``cancel()`` turns true between tokens
        (``"cancelled"``). ``logprobs``: with a count (0 = the chosen token's only), every
        chunk carries its token's :class:`TokenLogprob` with that many alternatives.
        """
        params = SamplingParams(temperature, top_k, top_p, repetition_penalty, seed, frequency_penalty, presence_penalty)
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if logprobs is not None and logprobs < 0:
            raise ValueError(f"logprobs must be >= 0 alternatives, got {logprobs}")
        prompt_ids, implied_stops = self.prepare(prompt)
        stops = tuple(s for s in (*stop, *implied_stops) if s)
        candidates = (*self.end_token_ids, self.eos_token_id, *map(self._single_token, (*implied_stops, self.eos_token)))
        stop_ids = {t for t in candidates if t is not None}
        if not prompt_ids:
            raise ValueError("prompt is empty: give at least one token")
        if len(prompt_ids) >= self.context_length:
            raise ValueError(f"prompt has {len(prompt_ids)} tokens; the model's context holds {self.context_length}")
        rng = np.random.default_rng(None if seed is None else seed % 2**64)  # any int: OpenAI clients send -1 too
        started = time.perf_counter()
        self.reset()
        logits = self._append(prompt_ids)
        generated: list[int] = []
        assembler = _TextAssembler(self.decode)
        text, emitted, finish, first_at, steps = "", 0, "length", 0.0, 0
        scored: list[TokenLogprob] = []
        while True:
            token = sample_token(logits, prompt_ids + generated, params, rng, generated)
            first_at = first_at or time.perf_counter()
            if token in stop_ids and not ignore_eos:
                finish = "stop"
                break
            generated.append(token)
            if logprobs is not None:
                scored.append(TokenLogprob(token, *top_logprobs(logits, token, logprobs)))
            assembler.push(token)
            text = assembler.text
            cut = _first_stop(text, stops)
            if cut is not None:
                text, finish = text[:cut], "stop"
            ready = len(text) if finish == "stop" else _printable_length(text, stops)
            yield StreamChunk(token, text[emitted:ready], logprob=scored[-1] if scored else None)
            emitted = max(emitted, ready)
            if finish == "stop" or len(generated) >= max_tokens or len(prompt_ids) + len(generated) >= self.context_length:
                break  # "length": max_tokens reached or the context is full
            if cancel is not None and cancel():
                finish = "cancelled"
                break
            logits = self._append([token])
            steps += 1
        if finish != "stop":
            text = assembler.final()  # with any held-back stop prefix or unfinished character
        timings = Timings(len(prompt_ids), first_at - started, steps, time.perf_counter() - first_at)
        yield StreamChunk(None, text[emitted:],
                          Completion(text, generated, finish, timings, tuple(scored) if logprobs is not None else None))

    def _single_token(self, text: str) -> int | None:
        ids = self.encode(text) if text else []
        return ids[0] if len(ids) == 1 else None


class _TextAssembler:
    """Incremental detokenization. Each new token decodes a short window that starts a
    few tokens back (prefix/read offsets, as in vLLM): O(1) work per token instead of
    re-decoding the whole output, and the window keeps a preceding token, so tokenizers
    that treat the first token specially (a SentencePiece leading space) agree with a
    whole-sequence decode. Text stops growing while the window ends mid-character."""

    def __init__(self, decode: Callable[[Sequence[int]], str]):
        self.decode = decode
        self.tokens: list[int] = []
        self.prefix = self.read = 0
        self.text = ""

    def push(self, token: int) -> None:
        self.tokens.append(token)
        before, after = self._window()
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before):]
            self.prefix, self.read = self.read, len(self.tokens)

    def final(self) -> str:
        """All text, an unfinished character included (as U+FFFD)."""
        before, after = self._window()
        return self.text + after[len(before):]

    def _window(self) -> tuple[str, str]:
        return self.decode(self.tokens[self.prefix: self.read]), self.decode(self.tokens[self.prefix:])


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    positions = [text.find(s) for s in stops if s and s in text]
    return min(positions) if positions else None


def _printable_length(text: str, stops: Sequence[str]) -> int:
    """Length of ``text`` safe to emit: no possible stop-string prefix at its end."""
    end = len(text)
    hold = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, end), 0, -1):
            if text[end - size: end] == stop[:size]:
                hold = max(hold, size)
                break
    return end - hold
