"""Over-distillation checks: the ways a student goes wrong that perplexity hides.

Measured on greedy answers to a probe set (each question in several phrasings), the
teacher's and each student's through the same HTTP API:

* ``truncation_rate``: share of answers that hit ``max_tokens`` without ending
  (``finish_reason == "length"``).
* ``mean_answer_tokens``, ``mean_answer_words`` and ``length_ratio`` = student mean /
  teacher mean in words (units of ``text_stats.words``: comparable whatever tokenizer the teacher
  API counts with; terse < 1).
* ``paraphrase_stability``: how alike the answers to rephrasings of one question are:
  word-level F1 (SQuAD-style bag of lower-cased words, punctuation marks and line
  breaks) between every pair of a group's answers, averaged over pairs, then over groups.
* ``repetition_rate``: mean over answers of the share of 4-grams of those units that
  repeat an earlier 4-gram of the same answer (a looping answer scores near 1).

and from teacher-forced next-token predictions (see ``quality.py``):

* ``ece``: expected calibration error of the top-1 confidence, 15 equal-width bins,
  weighted by the share of positions in each bin; ``overconfidence`` = mean confidence -
  accuracy (> 0: confidently wrong more often than it admits).

Each check has a threshold relative to the teacher (``THRESHOLDS``); crossing it adds a
warning to the student's report entry.
"""

from __future__ import annotations

import itertools
from statistics import mean

import numpy as np

from edgedistill.text_stats import repetition, word_f1, words

THRESHOLDS = {
    "truncation_rate_increase": 0.10,  # student truncation rate - teacher's
    "length_ratio_min": 0.60,  # student answers this much shorter than the teacher's: terse
    "length_ratio_max": 1.67,  # or this much longer: rambling
    "paraphrase_stability_drop": 0.15,  # teacher stability - student's
    "repetition_rate_increase": 0.10,  # student repetition rate - teacher's
    "ece_increase": 0.05,  # student ECE - teacher's
    "retention_min": 0.90,  # student answer ROUGE-L (else top-1 accuracy) / teacher's
}
ECE_BINS = 15
def answer_checks(groups: list[list[dict]]) -> dict:
    """``groups``: per probe question, one answer per phrasing, each
    ``{"text", "completion_tokens", "finish_reason"}``."""
    answers = [a for group in groups for a in group]
    stability = [mean(word_f1(x["text"], y["text"]) for x, y in itertools.combinations(group, 2))
                 for group in groups if len(group) > 1]
    return {
        "answers": len(answers),
        "truncation_rate": mean(a["finish_reason"] == "length" for a in answers),
        "mean_answer_tokens": mean(a["completion_tokens"] for a in answers),
        "mean_answer_words": mean(len(words(a["text"])) for a in answers),
        "paraphrase_stability": mean(stability) if stability else None,
        "repetition_rate": mean(repetition(a["text"]) for a in answers),
    }


def calibration(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> dict:
    """ECE and overconfidence of top-1 predictions: ``confidence`` (N,) max softmax
    probability, ``correct`` (N,) bool whether the argmax was the next token."""
    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            ece += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    return {"ece": float(ece), "overconfidence": float(confidence.mean() - correct.mean())}


def warnings_for(student: dict, teacher: dict | None, thresholds: dict = THRESHOLDS) -> list[str]:
    """Warnings of one student entry against the teacher's (checks whose numbers are
    missing on either side are skipped)."""
    found = []
    s, t = student.get("overdistill") or {}, (teacher or {}).get("overdistill") or {}

    def both(key: str, a: dict, b: dict) -> bool:
        return a.get(key) is not None and b.get(key) is not None

    if both("truncation_rate", s, t) and s["truncation_rate"] - t["truncation_rate"] > thresholds["truncation_rate_increase"]:
        found.append(f"truncated: {s['truncation_rate']:.0%} of answers hit max_tokens vs the teacher's "
                     f"{t['truncation_rate']:.0%} (> +{thresholds['truncation_rate_increase']:.0%})")
    ratio = s.get("length_ratio")
    if ratio is not None and ratio < thresholds["length_ratio_min"]:
        found.append(f"terse: answers are {ratio:.2f}x the teacher's length (< {thresholds['length_ratio_min']:.2f}x)")
    if ratio is not None and ratio > thresholds["length_ratio_max"]:
        found.append(f"rambling: answers are {ratio:.2f}x the teacher's length (> {thresholds['length_ratio_max']:.2f}x)")
    if (both("paraphrase_stability", s, t)
            and t["paraphrase_stability"] - s["paraphrase_stability"] > thresholds["paraphrase_stability_drop"]):
        found.append(f"brittle to rephrasing: paraphrase stability {s['paraphrase_stability']:.2f} vs the teacher's "
                     f"{t['paraphrase_stability']:.2f} (drop > {thresholds['paraphrase_stability_drop']:.2f})")
    if both("repetition_rate", s, t) and s["repetition_rate"] - t["repetition_rate"] > thresholds["repetition_rate_increase"]:
        found.append(f"repetitive: {s['repetition_rate']:.0%} of 4-grams repeat vs the teacher's "
                     f"{t['repetition_rate']:.0%} (> +{thresholds['repetition_rate_increase']:.0%})")
    if both("ece", student, teacher or {}) and student["ece"] - teacher["ece"] > thresholds["ece_increase"]:
        direction = "overconfident" if (student.get("overconfidence") or 0) > 0 else "underconfident"
        found.append(f"miscalibrated ({direction}): ECE {student['ece']:.3f} vs the teacher's {teacher['ece']:.3f} "
                     f"(> +{thresholds['ece_increase']:.2f})")
    if student.get("retention") is not None and student["retention"] < thresholds["retention_min"]:
        what = ("answer ROUGE-L" if student.get("retention_of") == "answers_rouge_l" else "top-1 accuracy")
        found.append(f"quality: keeps {student['retention']:.1%} of the teacher's {what} "
                     f"(< {thresholds['retention_min']:.0%})")
    return found
