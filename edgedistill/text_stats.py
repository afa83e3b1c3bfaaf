"""Plain-text statistics shared by the data filter, the over-distillation checks and error
messages: one definition of a "word" and of repetition, so a response the data filter
keeps and an answer the bench scores are measured the same way."""

from __future__ import annotations

import re
from collections import Counter

# words, punctuation marks and line breaks: an answer that is only blank lines still loops
_WORD = re.compile(r"\w+|[^\w\s]|\n", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def word_f1(a: str, b: str) -> float:
    """SQuAD-style F1 of two texts' bags of words; two empty texts agree (1.0)."""
    wa, wb = words(a), words(b)
    if not wa and not wb:
        return 1.0
    common = sum((Counter(wa) & Counter(wb)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(wa), common / len(wb)
    return 2 * precision * recall / (precision + recall)


def repetition(text: str, n: int = 4) -> float:
    """Share of the text's word n-grams that repeat an earlier one (0 when too short)."""
    tokens = words(text)
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def one_line(text: str, limit: int = 300) -> str:
    """Any text (a server's HTML error page, a traceback) as one line of at most ``limit``
    characters, for an error message."""
    return " ".join(text.split())[:limit]
