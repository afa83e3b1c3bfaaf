"""The OpenAI wire format the server speaks: request schemas, response and chunk bodies,
and errors (``{"error": {"message", "type", "param", "code"}}``).

Requests follow the OpenAI API's field names and defaults (``temperature`` 1, completions
``max_tokens`` 16). Extensions, as vLLM and llama.cpp's server name them: ``top_k``,
``repetition_penalty``, ``ignore_eos``. Fields OpenAI clients send by default but that
change nothing here (``user``, ``metadata``, ...) are ignored; fields that would change
the output and are not implemented (``logit_bias``, tools, ...) are refused with a 400
that names them, never silently dropped.

Log-probabilities (completions ``logprobs: N``; chat ``logprobs: true`` with
``top_logprobs: N``; N <= 20) are the model's own: log-softmax of the raw logits at T = 1,
before penalties, temperature and truncation (``sampling.top_logprobs``), so a teacher's
distribution comes out as it is, whatever the sampling settings. A token's text is its
decoding alone (``bytes`` are that text's UTF-8, so a byte-fallback piece of a character
shows as U+FFFD).
"""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

MAX_STOP_STRINGS = 4  # OpenAI's own limit
MAX_CHOICES = 8
MAX_TOP_LOGPROBS = 20  # OpenAI's chat limit


class ApiError(Exception):
    """An error answered as an OpenAI error body with ``status``."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def body(self) -> dict:
        return error_body(self.message, self.kind, self.param, self.code)


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(BaseModel):
    """Fields both endpoints share."""

    model_config = ConfigDict(extra="ignore")

    model: Optional[str] = None
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = None
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    # extensions
    top_k: int = Field(0, ge=0)
    repetition_penalty: float = Field(1.0, gt=0)
    ignore_eos: bool = False
    # refused when set (see UNSUPPORTED)
    logprobs: Any = None
    top_logprobs: Optional[int] = None
    logit_bias: Optional[dict] = None
    best_of: Optional[int] = None
    suffix: Optional[str] = None
    tools: Optional[list] = None
    tool_choice: Any = None
    functions: Optional[list] = None
    response_format: Optional[dict] = None

    def stop_strings(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP_STRINGS:
            raise ApiError(400, f"stop: at most {MAX_STOP_STRINGS} stop strings, got {len(stops)}", param="stop")
        return [s for s in stops if s]

    def logprob_count(self, chat: bool) -> int | None:
        """Alternatives per generated token when log-probabilities are asked for, else None."""
        if chat:
            if self.logprobs not in (None, False, True):
                raise ApiError(400, "logprobs: chat takes true or false (the count goes in top_logprobs)",
                               param="logprobs")
            if self.top_logprobs is not None and not self.logprobs:
                raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
            count = (self.top_logprobs or 0) if self.logprobs else None
        else:
            if self.top_logprobs is not None:
                raise ApiError(400, "top_logprobs is a chat field; completions take logprobs: N", param="top_logprobs")
            if self.logprobs is not None and (isinstance(self.logprobs, bool) or not isinstance(self.logprobs, int)):
                raise ApiError(400, "logprobs: completions take a count of alternatives (0 to 20)", param="logprobs")
            count = self.logprobs
        if count is not None and not 0 <= count <= MAX_TOP_LOGPROBS:
            raise ApiError(400, f"at most {MAX_TOP_LOGPROBS} alternatives per token, got {count}",
                           param="top_logprobs" if chat else "logprobs")
        return count

    def refuse_unsupported(self) -> None:
        for name, is_set in (
            ("logit_bias", bool(self.logit_bias)), ("best_of", (self.best_of or 1) > 1), ("suffix", bool(self.suffix)),
            ("tools", bool(self.tools)), ("tool_choice", self.tool_choice not in (None, "none")),
            ("functions", bool(self.functions)),
            ("response_format", (self.response_format or {"type": "text"}).get("type") != "text"),
        ):
            if is_set:
                raise ApiError(400, f"{name} is not supported by this server; remove it from the request", param=name)

    def sampling(self, choice: int, chat: bool = False) -> dict:
        """Keyword arguments of Model.stream for choice ``choice`` (seeds differ per choice)."""
        return {
            "logprobs": self.logprob_count(chat),
            "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty, "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty, "ignore_eos": self.ignore_eos,
            "seed": None if self.seed is None else self.seed + choice,
        }


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: Optional[int] = Field(16, ge=1)
    echo: bool = False

    def prompts(self) -> list:
        """One prompt per entry: text or token ids."""
        prompt = self.prompt
        if isinstance(prompt, str) or (prompt and all(isinstance(t, int) for t in prompt)):
            return [prompt]
        if not prompt:
            raise ApiError(400, "prompt is empty", param="prompt")
        return list(prompt)


class ChatRequest(_Sampling):
    messages: list[dict] = Field(..., min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)

    def token_budget(self) -> Optional[int]:
        return self.max_completion_tokens or self.max_tokens


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def logprobs_body(entries, token_text, chat: bool, text_offset: int = 0) -> dict | None:
    """The ``logprobs`` of a choice (or of one streamed chunk) in OpenAI's shape: chat
    ``{"content": [{token, logprob, bytes, top_logprobs}]}``, completions ``{tokens,
    token_logprobs, top_logprobs, text_offset}``. ``entries``: TokenLogprobs, or None when
    none were asked for; ``token_text(id)`` decodes one token; ``text_offset``: where the
    first token's text starts in the choice's text."""
    if entries is None:
        return None
    if chat:
        def item(token: int, logprob: float) -> dict:
            text = token_text(token)
            return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

        return {"content": [{**item(e.token, e.logprob), "top_logprobs": [item(t, lp) for t, lp in e.top]}
                            for e in entries]}
    texts = [token_text(e.token) for e in entries]
    offsets = list(itertools.accumulate((len(t) for t in texts[:-1]), initial=text_offset)) if texts else []
    return {"tokens": texts, "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{token_text(t): lp for t, lp in e.top} for e in entries], "text_offset": offsets}


def completion_body(request_id: str, model: str, choices: list[dict], usage_counts: dict, chat: bool) -> dict:
    """A whole (non-streamed) response; ``choices`` carry index, text, finish_reason and
    (shaped by ``logprobs_body``) logprobs."""
    if chat:
        shaped = [{"index": c["index"], "message": {"role": "assistant", "content": c["text"]},
                   "logprobs": c.get("logprobs"), "finish_reason": c["finish_reason"]} for c in choices]
    else:
        shaped = [{"index": c["index"], "text": c["text"], "logprobs": c.get("logprobs"),
                   "finish_reason": c["finish_reason"]} for c in choices]
    return {"id": request_id, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": model, "choices": shaped, "usage": usage_counts}


def chunk_body(request_id: str, model: str, index: int, chat: bool, text: str | None = None,
               finish_reason: str | None = None, role: Literal["assistant"] | None = None,
               logprobs: dict | None = None) -> dict:
    """One streamed chunk of choice ``index``."""
    if chat:
        delta = {k: v for k, v in (("role", role), ("content", text)) if v is not None}
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
    else:
        choice = {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": finish_reason}
    return {"id": request_id, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [choice]}


def usage_chunk(request_id: str, model: str, usage_counts: dict, chat: bool) -> dict:
    """The last chunk when ``stream_options.include_usage``: no choices, the usage."""
    return {"id": request_id, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [], "usage": usage_counts}
