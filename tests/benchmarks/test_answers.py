"""Answer-level quality: documentation questions from pages, ROUGE-L against a plain LCS
reference, the paired bootstrap interval, retention, and the recommendation built on it."""

import numpy as np
import pytest

from edgedistill.benchmarks.answers import (
    BUILTIN, Question, answer_quality, bootstrap_ratio, load_answer_questions, rouge_l)
from edgedistill.benchmarks.recommend import Constraint, recommend
from edgedistill.datagen.doc_questions import page_questions, questions_from_pages
from edgedistill.errors import UserError

PAGE = """functools --- Higher-order functions

The functools module is for higher-order functions.

cache(user_function)

   Simple lightweight unbounded function cache.  Sometimes called
   "memoize".

   Returns the same as `lru_cache(maxsize=None)`, creating a thin
   wrapper around a dictionary lookup for the function arguments.

   For example:

        @cache
        def factorial(n): ...

class partialmethod(func, /, *args, **keywords)

   Return a new *partialmethod* descriptor which behaves like partial except that it is
   designed to be used as a method definition rather than being directly callable.

tiny()

   Short.
"""


def test_a_signature_and_its_description_become_a_question_and_its_reference():
    questions = page_questions("library/functools.rst", PAGE)
    assert [q.question for q in questions] == [
        "What does `functools.cache(user_function)` do in Python?",
        "What is the class `functools.partialmethod(func, /, *args, **keywords)` in Python?"]  # "Short." is too short
    # the first paragraph is under 12 words: the next one joins it; markup is dropped, code is not kept
    assert questions[0].answer == ('Simple lightweight unbounded function cache. Sometimes called "memoize". Returns the '
                                   "same as lru_cache(maxsize=None), creating a thin wrapper around a dictionary lookup "
                                   "for the function arguments.")
    assert questions[1].answer.startswith("Return a new partialmethod descriptor")


def test_a_larger_draw_extends_a_smaller_one_and_ids_are_stable():
    pages = [{"path": "library/functools.rst", "text": PAGE},
             {"path": "library/other.rst", "text": PAGE.replace("functools", "other")}]
    small, large = questions_from_pages(pages, 2, seed=3), questions_from_pages(pages, 0, seed=3)
    assert large[:2] == small and len(large) == 4
    assert questions_from_pages(pages, 0, seed=3) == large


def test_the_builtin_held_out_set_comes_from_test_pages_and_the_independent_file():
    questions = load_answer_questions(BUILTIN, test_pages=5, independent=4, paraphrased=2)
    assert [q.set for q in questions] == ["test-pages"] * 5 + ["independent"] * 4
    assert [len(q.phrasings) for q in questions] == [1] * 5 + [3, 3, 1, 1]
    train = {q.question for q in questions_from_pages(__import__("edgedistill.demo.pydocs", fromlist=["x"]).documents("train"), 0, 0)}
    assert not train & {q.phrasings[0] for q in questions[:5]}  # held out: no test-page question is a train one


def test_a_bad_question_file_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"id": "a", "phrasings": ["What?"]}\n')
    with pytest.raises(UserError, match="line 1 needs 'phrasings'"):
        load_answer_questions(str(bad), 0, 0, 0)
    with pytest.raises(UserError, match="is not a file"):
        load_answer_questions(str(tmp_path / "missing.jsonl"), 0, 0, 0)


def lcs_f1(prediction: str, reference: str) -> float:
    """ROUGE-L F1 from its definition: LCS of the word sequences, P = LCS/|pred|, R = LCS/|ref|."""
    a, b = prediction.lower().split(), reference.lower().split()
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    lcs = table[-1][-1]
    return 0.0 if lcs == 0 else 2 * lcs / (len(a) + len(b))


@pytest.mark.parametrize("prediction, reference", [
    ("the cat sat on the mat", "the cat sat on the mat"),
    ("a cat on a mat", "the cat sat on the mat"),
    ("mat the on sat cat the", "the cat sat on the mat"),
    ("nothing alike here", "the cat sat on the mat"),
])
def test_rouge_l_is_the_lcs_f1(prediction, reference):
    # words without stems or punctuation: rouge-score's tokenizer and stemmer leave them as they are
    assert rouge_l([prediction], [reference])[0] == pytest.approx(lcs_f1(prediction, reference))


def test_the_bootstrap_interval_is_paired_and_brackets_the_ratio():
    rng = np.random.default_rng(0)
    teacher = rng.uniform(0.1, 0.4, 200)
    assert bootstrap_ratio(teacher, teacher) == (pytest.approx(1.0), pytest.approx(1.0))  # paired: no spread
    student = teacher * 0.8 + rng.normal(0, 0.02, 200)
    low, high = bootstrap_ratio(student, teacher)
    assert low < student.mean() / teacher.mean() < high and high - low < 0.1
    assert bootstrap_ratio(student[:1], teacher[:1]) is None


def test_retention_is_the_ratio_of_mean_rouge_l_to_the_teachers():
    questions = [Question("a", "test-pages", ("Q1",), "open a file with open"),
                 Question("b", "independent", ("Q2", "Q2 again"), "use a list comprehension")]
    groups = {
        "teacher": [[{"text": "open a file with open"}], [{"text": "use a comprehension"}, {"text": "x"}]],
        "student": [[{"text": "open a file"}], [{"text": "nothing"}, {"text": "y"}]],
        "missing": None,
    }
    scored = answer_quality(questions, groups, "teacher")
    assert set(scored) == {"teacher", "student"}
    t, s = scored["teacher"], scored["student"]
    assert t["rouge_l"] == pytest.approx((1.0 + lcs_f1("use a comprehension", "use a list comprehension")) / 2)
    assert s["retention"] == pytest.approx(s["rouge_l"] / t["rouge_l"])
    assert s["by_set"]["independent"]["retention"] == 0.0
    assert s["rouge_l_vs_teacher"] == pytest.approx(lcs_f1("open a file", "open a file with open") / 2)
    assert "retention" not in t


def entry(name, source, retention, mb, speed=100.0, ready=True):
    fmt, _, quantization = name.rsplit("/", 1)[-1].removeprefix("teacher-").partition("-")
    return {"name": name, "source": source, "retention": retention, "bytes": mb * 1e6, "decode_tokens_per_s": speed,
            "format": fmt, "quantization": quantization,
            "device_ready": ready, "retention_of": "answers_rouge_l", "missing": False}


def test_the_recommendation_ships_the_smallest_artifact_over_the_floor():
    artifacts = [entry("gguf-f16", "student", 0.95, 90), entry("gguf-q4_k_m", "student", 0.90, 30),
                 entry("gguf-q4_0", "student", 0.80, 25), entry("teacher-gguf-q4_k_m", "teacher", 1.0, 105),
                 entry("ce/gguf-q4_k_m", "smollm2-docs-ce-only:student", 0.85, 30),
                 entry("broken", "student", 0.99, 10, ready=False)]
    result = recommend(artifacts, Constraint(min_retention=0.85))
    assert result["choice"] == "gguf-q4_k_m"  # q4_0 is under the floor, "broken" failed its parity gate
    verdicts = " | ".join(result["verdict"])
    # each against the distilled artifact of its format and quantization: q4_k_m vs q4_k_m
    assert ("a trade against teacher, only quantized: distilled gguf-q4_k_m keeps 90.0% at 30.0 MB vs "
            "teacher-gguf-q4_k_m 100.0% at 105.0 MB") in verdicts  # smaller but worse
    assert "distillation paid against smollm2-docs-ce-only (its student): distilled gguf-q4_k_m keeps 90.0%" in verdicts
    tight = recommend(artifacts, Constraint(min_retention=0.97))
    assert tight["choice"] == "teacher-gguf-q4_k_m" and "not the distilled student" in tight["verdict"][-1]
    none = recommend(artifacts, Constraint(min_retention=0.85, max_mb=20))
    assert none["choice"] is None and none["why"].startswith("no artifact meets")
