"""Prompts in, answered rows out: reading, dedupe, and the resumable JSONL output.

* Prompts: JSONL rows with ``prompt`` (text, sent to /completions) or ``messages`` (sent
  to /chat/completions); a row's ``id`` is its own or the sha256 of its prompt, so
  duplicates are answered once.
* Output: one JSONL row per answered prompt, appended, flushed and fsynced as soon as it
  is answered. A rerun skips ids already in the file (a torn last line from a kill is cut
  off first), so a killed run loses at most the requests in flight and never writes a row
  twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from edgedistill.errors import UserError
from edgedistill.json_files import numbered_rows


@dataclass(frozen=True)
class Request:
    id: str
    row: dict  # the prompt row as read (prompt or messages, and any other fields kept as they are)


@dataclass
class Progress:
    total: int = 0  # distinct prompts
    answered: int = 0  # this run
    kept: int = 0  # of those answered this run, passing the filter
    skipped: int = 0  # already in the output
    failed: list[str] = field(default_factory=list)  # "id: reason"
    prompt_tokens: int = 0  # this run
    completion_tokens: int = 0


def read_requests(path: Path) -> list[Request]:
    """The prompt rows of ``path``, duplicates (same id) dropped; raises UserError naming the
    line of a bad row."""
    if not path.is_file():
        raise UserError(f"prompts file {path} does not exist; give a JSONL file of {{\"prompt\"}} or {{\"messages\"}} rows")
    requests, seen = [], set()
    for number, row in numbered_rows(path, str(path)):
        if not isinstance(row, dict) or not (isinstance(row.get("prompt"), str) or isinstance(row.get("messages"), list)):
            raise UserError(f"{path} line {number} needs a 'prompt' text or a 'messages' list")
        if "prompt" in row and "messages" in row:
            raise UserError(f"{path} line {number} has both 'prompt' and 'messages'; keep one")
        key = str(row.get("id") or prompt_digest(row.get("prompt") if "prompt" in row else row["messages"]))
        if key not in seen:
            seen.add(key)
            requests.append(Request(key, row))
    if not requests:
        raise UserError(f"prompts file {path} has no prompt rows")
    return requests


def prompt_digest(prompt) -> str:
    return hashlib.sha256(json.dumps(prompt, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:16]


def answered_rows(out: Path) -> list[dict]:
    """Rows already in the output; a torn last line (a killed run) is cut off first."""
    if not out.is_file():
        return []
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(out, "r+b") as handle:
            handle.truncate(cut)
        data = data[:cut]
    rows = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict) or "id" not in row:
                raise UserError(f"{out} line {number} is not an answered row (JSON with an id): the output was edited or "
                                "belongs to something else; move it away and rerun")
            rows.append(row)
    return rows


def answered_ids(out: Path) -> set[str]:
    return {row["id"] for row in answered_rows(out)}


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


def progress_printer(label: str, price=None, every_s: float = 10.0):
    """An ``on_row`` callback printing "label: done/total answered (kept, failed) | tokens
    [| cost so far]" to stderr at most every ``every_s`` seconds and once at the end;
    ``price``: a ``prices.Prices`` whose API row prices the tokens (None: no cost)."""
    from edgedistill.progress import Every, say

    due = Every(every_s)

    def on_row(progress: Progress) -> None:
        done = progress.answered + progress.skipped + len(progress.failed)
        if not due(final=done == progress.total):
            return
        cost = f" | {usd(price.api_usd(progress.prompt_tokens, progress.completion_tokens))} so far" if price else ""
        say(f"{label}: {progress.answered + progress.skipped}/{progress.total} answered ({progress.kept} kept this run, "
            f"{len(progress.failed)} failed) | {progress.prompt_tokens:,} prompt + {progress.completion_tokens:,} "
            f"completion tokens{cost}")

    return on_row


def usd(amount: float) -> str:
    """Dollars with cents, or to the micro-dollar below $1 (one test run costs fractions of a cent)."""
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:.6f}"


def totals(out: Path) -> dict:
    """Counts and tokens over every row in the output (all runs so far)."""
    rows = answered_rows(out)
    return {"rows": len(rows), "kept": sum(1 for r in rows if r.get("kept", True)),
            "prompt_tokens": sum((r.get("usage") or {}).get("prompt_tokens", 0) for r in rows),
            "completion_tokens": sum((r.get("usage") or {}).get("completion_tokens", 0) for r in rows)}
