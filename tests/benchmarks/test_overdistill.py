"""Over-distillation checks against plain references and hand cases."""

import numpy as np
import pytest

from edgedistill.benchmarks.overdistill import THRESHOLDS, answer_checks, calibration, warnings_for
from edgedistill.text_stats import repetition, word_f1


def test_word_f1_is_squad_style():
    assert word_f1("the cat sat", "the cat sat") == 1.0
    assert word_f1("a b", "b c") == pytest.approx(0.5)  # 1 common / 2 each
    assert word_f1("", "") == 1.0 and word_f1("a", "") == 0.0


def test_repetition_counts_repeated_4grams_including_blank_lines():
    assert repetition("one two three four five six") == 0.0
    assert repetition("a b c d a b c d a b c d") == pytest.approx(1 - 4 / 9)  # 9 4-grams, 4 distinct
    assert repetition("\n" * 20) > 0.9  # an answer of blank lines loops


def test_answer_checks_pool_answers_and_average_stability_per_group():
    groups = [[{"text": "x y", "completion_tokens": 10, "finish_reason": "stop"},
               {"text": "x y", "completion_tokens": 20, "finish_reason": "length"}],
              [{"text": "p", "completion_tokens": 30, "finish_reason": "stop"},
               {"text": "q", "completion_tokens": 40, "finish_reason": "stop"}]]
    checks = answer_checks(groups)
    assert checks["answers"] == 4 and checks["truncation_rate"] == 0.25 and checks["mean_answer_tokens"] == 25
    assert checks["mean_answer_words"] == 1.5
    assert checks["paraphrase_stability"] == pytest.approx(0.5)  # group 1 agrees fully, group 2 not at all


def test_ece_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0, 1, 1000)
    correct = rng.uniform(0, 1, 1000) < confidence ** 2  # overconfident
    reference = 0.0
    for b in range(15):
        low, high = b / 15, (b + 1) / 15
        members = (confidence > low) & (confidence <= high) if b else (confidence <= high)
        if members.any():
            reference += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    result = calibration(confidence, correct)
    assert result["ece"] == pytest.approx(reference)
    assert result["overconfidence"] == pytest.approx(confidence.mean() - correct.mean()) and result["overconfidence"] > 0


def test_each_check_warns_past_its_threshold_and_not_before():
    teacher = {"ece": 0.02, "overdistill": {"truncation_rate": 0.1, "paraphrase_stability": 0.6, "repetition_rate": 0.05}}
    fine = {"ece": 0.06, "overconfidence": 0.1, "retention": 0.95,
            "overdistill": {"truncation_rate": 0.2, "length_ratio": 0.7, "paraphrase_stability": 0.5, "repetition_rate": 0.1}}
    assert warnings_for(fine, teacher) == []
    bad = {"ece": 0.2, "overconfidence": 0.1, "retention": 0.5,
           "overdistill": {"truncation_rate": 0.5, "length_ratio": 0.3, "paraphrase_stability": 0.1, "repetition_rate": 0.6}}
    found = " | ".join(warnings_for(bad, teacher))
    for word in ("truncated", "terse", "brittle to rephrasing", "repetitive", "miscalibrated (overconfident)", "quality"):
        assert word in found
    assert "rambling" in " ".join(warnings_for({"overdistill": {"length_ratio": THRESHOLDS["length_ratio_max"] + 0.1}}, teacher))
    assert warnings_for(bad, None) == [w for w in warnings_for(bad, teacher) if w.startswith(("terse", "quality"))]
