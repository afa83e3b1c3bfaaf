"""JSONL input files: numbered rows, a bad line named in a one-line UserError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from edgedistill.errors import UserError


def numbered_rows(path: Path, label: str) -> Iterator[tuple[int, object]]:
    """(line number, parsed row) for every non-blank line of ``path``; ``label`` starts the
    error message of a line that is not JSON (e.g. "bench.probe_path FILE")."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{label} is not UTF-8 text (byte {exc.start}); save it as UTF-8 JSONL") from None
    return parse_rows(text, label)


def parse_rows(text: str, label: str) -> Iterator[tuple[int, object]]:
    """(line number, parsed row) for every non-blank line of JSONL ``text`` (already read)."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{label} line {number} is not JSON ({exc.msg}); write one JSON object per line") from None
