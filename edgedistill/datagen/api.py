"""The teacher behind an OpenAI-compatible API (``edgedistill serve``, OpenAI, vLLM, ...).

* Requests run ``concurrency`` at a time, retried as ``edgedistill.openai_client`` says
  (connection errors, 408/409/429 and 5xx, with backoff); other 4xx fail the row at once.
  Failed rows are reported, not written, so a rerun tries them again.
* Logprobs: with ``top_logprobs`` > 0 each row keeps, per generated token, its text, its
  logprob and the teacher's top alternatives as ``[text, logprob]`` pairs, as the API
  returned them (log-softmax at T = 1 for ``edgedistill serve`` and OpenAI).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx

from edgedistill.datagen.store import Progress, Request, Writer, answered_ids, prompt_digest
from edgedistill.openai_client import ApiError, endpoint, http_client, post_json


@dataclass(frozen=True)
class Teacher:
    base_url: str  # .../v1
    model: str
    api_key: str | None = None


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 256
    temperature: float = 0.0
    top_logprobs: int = 0  # alternatives per generated token (0 = none)
    seed: int | None = None
    echo: bool = False  # score the prompt instead: its tokens' logprobs (completions echo), one token generated


def generate(requests: list[Request], out: Path, teacher: Teacher, sampling: Sampling = Sampling(),
             concurrency: int = 4, retries: int = 5, backoff_s: float = 0.5, timeout_s: float = 300.0,
             finish: Callable[[dict], dict] = lambda row: row,
             on_row: Callable[[Progress], None] = lambda progress: None) -> Progress:
    """Answer every request not yet in ``out``; ``finish`` adds derived fields (split,
    filter verdict) to each row before it is written; ``on_row`` sees the progress after
    each row. Returns what happened in this run.

    An API that fails ``max(8, 2 * concurrency)`` requests in a row for reasons of its own
    (unreachable or 5xx/429 after the retries, 401/403/404; not a 400 about one prompt) is
    taken to be down: the requests not yet sent fail at once ("not sent"),
    so a wrong URL or an outage is reported in seconds, not after every prompt's retries."""
    done = answered_ids(out)
    todo = [r for r in requests if r.id not in done]
    progress = Progress(total=len(requests), skipped=len(requests) - len(todo))
    writer, lock = Writer(out), threading.Lock()
    client = http_client(teacher.api_key, timeout_s)
    down_after, in_a_row = max(8, 2 * concurrency), [0]

    def answer(request: Request) -> None:
        try:
            if in_a_row[0] >= down_after:
                raise ApiError(f"not sent: the API failed {in_a_row[0]} requests in a row", systemic=False)
            row = finish(ask(client, teacher, request, sampling, retries, backoff_s))
        except ApiError as exc:
            with lock:
                in_a_row[0] += exc.systemic
                progress.failed.append(f"{request.id}: {exc}")
                on_row(progress)
            return
        writer.write(row)
        with lock:
            in_a_row[0] = 0
            progress.answered += 1
            progress.kept += int(row.get("kept", True))
            progress.prompt_tokens += row["usage"].get("prompt_tokens", 0)
            progress.completion_tokens += row["usage"].get("completion_tokens", 0)
            on_row(progress)

    try:
        with ThreadPoolExecutor(max(1, concurrency)) as pool:
            list(pool.map(answer, todo))
    finally:
        writer.close()
        client.close()
    return progress


def ask(client: httpx.Client, teacher: Teacher, request: Request, sampling: Sampling, retries: int,
        backoff_s: float) -> dict:
    """One prompt to the API, with retries; returns the output row."""
    chat = "messages" in request.row
    body = {"model": teacher.model, "max_tokens": sampling.max_tokens, "temperature": sampling.temperature}
    if sampling.seed is not None:  # one seed per prompt: the same run draws the same samples, prompts differ
        body["seed"] = (sampling.seed * 1_000_003 + int(prompt_digest(request.id), 16)) % 2**31
    if chat:
        body["messages"] = request.row["messages"]
        if sampling.top_logprobs:
            body.update(logprobs=True, top_logprobs=sampling.top_logprobs)
    else:
        body["prompt"] = request.row["prompt"]
        if sampling.top_logprobs or sampling.echo:
            body["logprobs"] = sampling.top_logprobs
        if sampling.echo:
            body.update(echo=True, max_tokens=1)
    response = post_json(client, endpoint(teacher.base_url, "chat/completions" if chat else "completions"), body,
                         retries, backoff_s)
    try:
        return output_row(request, response.json(), chat, sampling.echo)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ApiError(f"not an OpenAI-shaped answer ({type(exc).__name__}: {exc})") from None


def output_row(request: Request, body: dict, chat: bool, echo: bool = False) -> dict:
    """The output row of one answer: the prompt row, ``response``, ``finish_reason``,
    ``usage`` and (when asked) ``logprobs`` as [{token, logprob, top: [[token, logprob]]}].
    ``echo``: ``prompt_logprobs`` instead, the prompt's tokens (``usage.prompt_tokens`` of
    them; the first has no logprob) and no response."""
    choice = body["choices"][0]
    text = choice["message"]["content"] if chat else choice["text"]
    row = {"id": request.id, **request.row, "response": text or "", "finish_reason": choice.get("finish_reason"),
           "usage": body.get("usage") or {}}
    logprobs = choice.get("logprobs")
    if logprobs:
        if chat:
            row["logprobs"] = [{"token": t["token"], "logprob": t["logprob"],
                                "top": [[alt["token"], alt["logprob"]] for alt in t.get("top_logprobs") or []]}
                               for t in logprobs.get("content") or []]
        else:
            tops = logprobs.get("top_logprobs") or [None] * len(logprobs["tokens"])
            row["logprobs"] = [{"token": token, "logprob": lp, "top": [[k, v] for k, v in (top or {}).items()]}
                               for token, lp, top in zip(logprobs["tokens"], logprobs["token_logprobs"], tops)]
    if echo:
        count = int(row["usage"].get("prompt_tokens") or 0)
        if count <= 0 or len(row.get("logprobs") or []) < count:
            raise ValueError("echo needs usage.prompt_tokens and a logprob entry per prompt token")
        row["prompt_logprobs"] = row.pop("logprobs")[:count]
        row["response"], row["finish_reason"] = "", None
    return row


def score(rows: list[list[int]], teacher: Teacher, top_logprobs: int, concurrency: int = 4, retries: int = 5,
          backoff_s: float = 0.5, timeout_s: float = 300.0) -> list[list[dict]]:
    """The teacher's log-probabilities of each token-id row (completions ``echo``), kept in
    memory: per row, one ``{token, logprob, top}`` entry per token (the first has logprob
    None). Raises ``ApiError`` when a row fails after its retries."""
    sampling = Sampling(max_tokens=1, top_logprobs=top_logprobs, echo=True)
    with http_client(teacher.api_key, timeout_s) as client:
        def one(index: int) -> list[dict]:
            request = Request(str(index), {"prompt": [int(t) for t in rows[index]]})
            return ask(client, teacher, request, sampling, retries, backoff_s)["prompt_logprobs"]

        with ThreadPoolExecutor(max(1, concurrency)) as pool:
            return list(pool.map(one, range(len(rows))))
