"""The committed Python-documentation corpus: splits, QA set and token windows.

Built by ``build_corpus.py`` into ``data/pydocs/``; everything here reads only those
files, so no Debian package or network is needed at run time.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

PYDOCS = Path(__file__).with_name("data") / "pydocs"
SPLITS = ("train", "validation", "test")


def documents(split: str) -> list[dict]:
    """``[{"path", "text"}, ...]`` of one split, in the committed order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; one of {SPLITS}")
    with gzip.open(PYDOCS / f"{split}.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def texts(split: str) -> list[str]:
    return [row["text"] for row in documents(split)]


def qa_pairs() -> list[dict]:
    """``[{"source", "question", "prompt", "answer"}, ...]`` from the FAQ and glossary."""
    with open(PYDOCS / "qa.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]

