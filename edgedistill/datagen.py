"""Teacher data generation (``edgedistill generate-data``): prompts in, the teacher's
responses out, through any OpenAI-compatible API (a local HF teacher is served by
``edgedistill serve`` and reached the same way).

Work in progress toward issue 10 (sequence-level and on-policy KD): what is here is the
resumable, retrying, concurrent writer; chain-of-thought templates, filters and cost
accounting are still to come.

* Prompts: JSONL rows with ``prompt`` (text, sent to /completions) or ``messages`` (sent
  to /chat/completions); a row's ``id`` is its own or the sha256 of its prompt, so
  duplicates are answered once.
* Output: one JSONL row per answered prompt, appended and flushed as soon as it is
  answered. A rerun skips ids already in the file (a torn last line from a kill is cut
  off first), so a killed run loses at most the requests in flight.
* Retries: connection errors, 429 and 5xx are retried with exponential backoff
  (``backoff_s * 2**attempt``, capped at 30 s); other 4xx fail the row at once. Failed
  rows are reported, not written, so a rerun tries them again.
* Logprobs: with ``top_logprobs`` > 0 each row keeps, per generated token, its logprob
  and the teacher's top alternatives, as the API returned them.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from edgedistill.errors import UserError

RETRYABLE = {408, 409, 429, 500, 502, 503, 504}
MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class Teacher:
    base_url: str  # .../v1
    model: str
    api_key: str | None = None


@dataclass(frozen=True)
class Request:
    id: str
    row: dict  # the prompt row as read (prompt or messages, and any other fields kept as they are)


@dataclass
class Progress:
    answered: int = 0
    skipped: int = 0  # already in the output
    failed: list[str] = field(default_factory=list)  # "id: reason"
    prompt_tokens: int = 0
    completion_tokens: int = 0


def read_requests(path: Path) -> list[Request]:
    """The prompt rows of ``path``, duplicates (same id) dropped; raises UserError naming the
    line of a bad row."""
    if not path.is_file():
        raise UserError(f"prompts file {path} does not exist; give a JSONL file of {{\"prompt\"}} or {{\"messages\"}} rows")
    requests, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} line {number} is not JSON: {exc.msg}") from None
        if not isinstance(row, dict) or not (isinstance(row.get("prompt"), str) or isinstance(row.get("messages"), list)):
            raise UserError(f"{path} line {number} needs a 'prompt' text or a 'messages' list")
        key = str(row.get("id") or _digest(row.get("prompt") if "prompt" in row else row["messages"]))
        if key not in seen:
            seen.add(key)
            requests.append(Request(key, row))
    return requests


def _digest(prompt) -> str:
    return hashlib.sha256(json.dumps(prompt, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:16]


def answered_ids(out: Path) -> set[str]:
    """Ids already in the output; a torn last line (a killed run) is cut off first."""
    if not out.is_file():
        return set()
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(out, "r+b") as handle:
            handle.truncate(cut)
        data = data[:cut]
    ids = set()
    for line in data.decode("utf-8").splitlines():
        if line.strip():
            ids.add(json.loads(line)["id"])
    return ids


class Writer:
    """Appends rows, one flushed and fsynced line each, from any thread."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(path, "a", encoding="utf-8")
        self.lock = threading.Lock()

    def write(self, row: dict) -> None:
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with self.lock:
            self.handle.write(line)
            self.handle.flush()
            os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


def generate(requests: list[Request], out: Path, teacher: Teacher, max_tokens: int = 256, temperature: float = 0.0,
             top_logprobs: int = 0, concurrency: int = 4, retries: int = 5, backoff_s: float = 0.5,
             timeout_s: float = 300.0) -> Progress:
    """Answer every request not yet in ``out``; returns what happened."""
    progress = Progress()
    done = answered_ids(out)
    todo = [r for r in requests if r.id not in done]
    progress.skipped = len(requests) - len(todo)
    writer = Writer(out)
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {teacher.api_key}"} if teacher.api_key else {}
    client = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout_s, connect=10.0))

    def answer(request: Request) -> None:
        try:
            row = _ask(client, teacher, request, max_tokens, temperature, top_logprobs, retries, backoff_s)
        except _Failed as exc:
            with lock:
                progress.failed.append(f"{request.id}: {exc}")
            return
        writer.write(row)
        with lock:
            progress.answered += 1
            progress.prompt_tokens += row["usage"].get("prompt_tokens", 0)
            progress.completion_tokens += row["usage"].get("completion_tokens", 0)

    try:
        with ThreadPoolExecutor(max(1, concurrency)) as pool:
            list(pool.map(answer, todo))
    finally:
        writer.close()
        client.close()
    return progress


class _Failed(Exception):
    pass


def _ask(client: httpx.Client, teacher: Teacher, request: Request, max_tokens: int, temperature: float,
         top_logprobs: int, retries: int, backoff_s: float) -> dict:
    chat = "messages" in request.row
    body = {"model": teacher.model, "max_tokens": max_tokens, "temperature": temperature}
    if chat:
        body["messages"] = request.row["messages"]
        if top_logprobs:
            body.update(logprobs=True, top_logprobs=top_logprobs)
    else:
        body["prompt"] = request.row["prompt"]
        if top_logprobs:
            body["logprobs"] = top_logprobs
    url = f"{teacher.base_url.rstrip('/')}/{'chat/completions' if chat else 'completions'}"
    for attempt in range(retries + 1):
        try:
            response = client.post(url, json=body)
        except httpx.HTTPError as exc:
            reason = f"cannot reach {url}: {exc}"
        else:
            if response.status_code == 200:
                return _row(request, response.json(), chat)
            reason = f"HTTP {response.status_code}: {response.text[:200]}"
            if response.status_code not in RETRYABLE:
                raise _Failed(reason)
        if attempt < retries:
            time.sleep(min(MAX_BACKOFF_S, backoff_s * 2 ** attempt))
    raise _Failed(f"gave up after {retries + 1} attempts; last: {reason}")


def _row(request: Request, body: dict, chat: bool) -> dict:
    choice = body["choices"][0]
    text = choice["message"]["content"] if chat else choice["text"]
    row = {"id": request.id, **request.row, "response": text, "finish_reason": choice.get("finish_reason"),
           "usage": body.get("usage") or {}}
    logprobs = choice.get("logprobs")
    if logprobs:
        if chat:
            row["logprobs"] = [{"token": t["token"], "logprob": t["logprob"],
                                "top": [[alt["token"], alt["logprob"]] for alt in t.get("top_logprobs") or []]}
                               for t in logprobs.get("content") or []]
        else:
            row["logprobs"] = [{"token": token, "logprob": lp, "top": [[k, v] for k, v in (top or {}).items()]}
                               for token, lp, top in zip(logprobs["tokens"], logprobs["token_logprobs"],
                                                         logprobs.get("top_logprobs") or [])]
    return row
