"""A measuring client for any OpenAI-compatible endpoint: one streamed request at a time,
timed from sending it to its first and last streamed token.

Token counts come from the server's usage chunk (``stream_options.include_usage``); a
server that sends none is counted one token per streamed content chunk (``exact_counts``
False then). TTFT is measured to the first chunk that carries text.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import httpx

from edgedistill.openai_client import body_error, endpoint, error_message, http_client
from edgedistill.text_stats import one_line


class TargetError(RuntimeError):
    """The endpoint cannot be measured (unreachable, or it answers with errors)."""


@dataclass(frozen=True)
class RequestResult:
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float  # request sent -> first streamed text
    e2e_s: float  # request sent -> end of the stream
    finish_reason: str
    text: str
    exact_counts: bool = True

    @property
    def decode_s(self) -> float:
        return self.e2e_s - self.ttft_s

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first; None for a one-token answer."""
        return self.decode_s / (self.completion_tokens - 1) if self.completion_tokens > 1 and self.decode_s > 0 else None

    @property
    def decode_tokens_per_s(self) -> float | None:
        tpot = self.tpot_s
        return 1.0 / tpot if tpot else None

    @property
    def prefill_tokens_per_s(self) -> float | None:
        return self.prompt_tokens / self.ttft_s if self.prompt_tokens and self.ttft_s > 0 else None


class Endpoint:
    """``base_url`` ends in ``/v1``. ``mode`` "completions" sends the prompt text as is;
    "chat" sends it as one user message. ``extra``: fields added to every request body
    (our own server takes ``ignore_eos``; other APIs may refuse unknown fields)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, mode: str = "completions",
                 extra: dict | None = None, timeout_s: float = 300.0):
        self.base_url, self.model, self.mode, self.extra = base_url.rstrip("/"), model, mode, dict(extra or {})
        self.client = http_client(api_key, timeout_s)

    def describe(self) -> str:
        return f"{self.base_url} (model {self.model})"

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "Endpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def check(self) -> None:
        """One tiny request, so an unreachable or failing endpoint is told apart before
        any measurement starts."""
        self.stream("Hello", max_tokens=1, greedy=True)

    def stream(self, prompt: str, max_tokens: int, greedy: bool = True, extra: dict | None = None) -> RequestResult:
        path, body = self._body(prompt, max_tokens, greedy, {**self.extra, **(extra or {})})
        url = endpoint(self.base_url, path)
        text, chunks, first_at, finish, usage, done = [], 0, None, None, None, False
        started = time.perf_counter()
        try:
            with self.client.stream("POST", url, json=body) as response:
                if response.status_code != 200:
                    raise TargetError(f"{url} answered HTTP {response.status_code}: {error_message(response)}")
                for data in _sse_data(response):
                    if data == "[DONE]":
                        done = True
                        break
                    event = json.loads(data)
                    if not isinstance(event, dict):
                        raise TargetError(f"{url} streamed an event that is not a JSON object: {one_line(data)}")
                    if "error" in event:
                        raise TargetError(f"{url} failed mid-stream: {body_error(event)}")
                    usage = event.get("usage") if isinstance(event.get("usage"), dict) else usage
                    for choice in event.get("choices") or []:
                        piece = _piece(choice, self.mode)
                        if piece:
                            first_at = first_at or time.perf_counter()
                            text.append(piece)
                            chunks += 1
                        finish = (choice.get("finish_reason") if isinstance(choice, dict) else None) or finish
        except httpx.InvalidURL as exc:
            raise TargetError(f"{url} is not a valid URL: {exc}") from None
        except httpx.HTTPError as exc:
            raise TargetError(f"cannot reach {url}: {one_line(str(exc)) or type(exc).__name__}") from None
        except json.JSONDecodeError as exc:
            raise TargetError(f"{url} streamed something that is not JSON: {exc}") from None
        if not done and finish is None:  # a server that ignored stream: true, or a connection cut short
            raise TargetError(f"{url} ended its stream without a finish_reason or [DONE] (does it stream SSE?)")
        ended = time.perf_counter()
        prompt_tokens, completion_tokens = (_count(usage, key) for key in ("prompt_tokens", "completion_tokens"))
        return RequestResult(
            prompt_tokens=prompt_tokens or 0,
            completion_tokens=chunks if completion_tokens is None else completion_tokens,
            ttft_s=(first_at or ended) - started, e2e_s=ended - started,
            finish_reason=finish or "unknown", text="".join(text), exact_counts=completion_tokens is not None,
        )

    def _body(self, prompt: str, max_tokens: int, greedy: bool, extra: dict) -> tuple[str, dict]:
        body = {"model": self.model, "max_tokens": max_tokens, "stream": True,
                "stream_options": {"include_usage": True}, **({"temperature": 0.0} if greedy else {}), **extra}
        if self.mode == "chat":
            return "/chat/completions", {**body, "messages": [{"role": "user", "content": prompt}]}
        return "/completions", {**body, "prompt": prompt}


def _sse_data(response: httpx.Response):
    """The ``data:`` payloads of a server-sent event stream (multi-line data joined)."""
    lines: list[str] = []
    for line in response.iter_lines():
        if not line:
            if lines:
                yield "\n".join(lines)
                lines = []
        elif line.startswith("data:"):
            lines.append(line[5:].lstrip(" "))
    if lines:
        yield "\n".join(lines)


def _piece(choice, mode: str) -> str | None:
    """The text of one streamed choice (completions: ``text``; chat: ``delta.content``)."""
    if not isinstance(choice, dict):
        return None
    piece = choice.get("text") if mode == "completions" else (choice.get("delta") or {}).get("content")
    return piece if isinstance(piece, str) else None


def _count(usage: dict | None, key: str) -> int | None:
    value = (usage or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None

