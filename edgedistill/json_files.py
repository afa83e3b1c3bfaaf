"""JSON and JSONL files read with one-line errors: JSONL input rows (a bad line named in a
UserError) and a model folder's JSON object files (a damaged one named in a ValueError,
the runtime's convention; the build turns it into a UserError)."""

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


def read_json_object(file: Path, fix: str = "export the model folder again") -> dict:
    """A JSON object file (config.json, generation_config.json, ...); a damaged one is a
    ValueError naming it and ``fix``."""
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{file} is not valid UTF-8 JSON ({exc}); {fix}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{file} holds a JSON {type(value).__name__}, not an object; {fix}")
    return value
