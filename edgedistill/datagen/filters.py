"""Which generated responses are fit to train on.

Every answered prompt stays in the output (so a rerun does not ask again); rows that fail
get ``"kept": false`` and ``"filter"`` naming the first check that failed, and training
reads kept rows only. Lengths count words and punctuation (``text_stats.words``), so the
same thresholds mean the same for an API teacher with another tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgedistill.text_stats import repetition, words
from edgedistill.datagen.templates import split_rationale


@dataclass(frozen=True)
class ResponseFilter:
    min_words: int = 1  # shorter responses (empty ones included) are dropped
    max_words: int = 0  # 0 = no limit
    max_repetition: float = 0.5  # share of repeated word 4-grams above which a response is a loop
    drop_truncated: bool = False  # drop responses cut by max_tokens (finish_reason "length")
    require_answer: bool = False  # CoT: drop responses without an answer line

    def check(self, row: dict) -> str | None:
        """The reason ``row`` is dropped, or None when it is kept."""
        text = row.get("response") or ""
        count = len(words(text))
        if count < self.min_words:
            return f"shorter than {self.min_words} words"
        if self.max_words and count > self.max_words:
            return f"longer than {self.max_words} words"
        if repetition(text) > self.max_repetition:
            return f"repetitive (over {self.max_repetition:.0%} of 4-grams repeat)"
        if self.drop_truncated and row.get("finish_reason") == "length":
            return "truncated at max_tokens"
        if self.require_answer and split_rationale(text) is None:
            return "no answer line after the reasoning"
        return None


def finish_row(row: dict, response_filter: ResponseFilter, cot: bool) -> dict:
    """``row`` with the rationale/answer split (CoT) and the filter's verdict added."""
    if cot and (parts := split_rationale(row.get("response") or "")) is not None:
        row["rationale"], row["answer"] = parts
    reason = response_filter.check(row)
    row["kept"], row["filter"] = reason is None, reason
    return row
