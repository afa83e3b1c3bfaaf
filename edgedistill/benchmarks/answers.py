"""Answer-level quality: held-out questions answered in chat form, scored with ROUGE-L.

Every model (the teacher and each artifact, through the same OpenAI-compatible API)
answers the same held-out questions greedily as a one-turn chat. Each answer to a
question's first phrasing is scored with ROUGE-L F1 (``rouge-score``, Porter stemming,
its default tokenizer: lower-cased alphanumeric words) against the question's reference
answer, and a student's also against the teacher's answer. Per model:

* ``rouge_l``: mean ROUGE-L F1 against the references over the questions;
* ``rouge_l_vs_teacher``: mean ROUGE-L F1 against the teacher's answer (1.0 = says what
  the teacher says);
* ``retention`` = student ``rouge_l`` / teacher ``rouge_l`` (ratio of means), with a 95%
  paired bootstrap interval: questions resampled with replacement (``BOOTSTRAP_SAMPLES``
  resamples, seeded), the ratio of means recomputed on each, the 2.5th and 97.5th
  percentiles reported;
* the same per question set (``by_set``: test-page questions, the independent set).

The builtin set ``builtin:pydocs-answers`` is the questions of the Python docs' test pages
(``datagen/doc_questions.py``; reference = the page's description, a page no model trained
on) and ``independent_qa.jsonl``: questions written independently of the pages, each in
three phrasings (the paraphrase-stability check asks ``paraphrased`` of them in all three).
A JSONL file of ``{"id", "phrasings": [...], "answer"}`` rows (``question`` may stand in for
one phrasing) is a set of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from statistics import mean

import numpy as np

from edgedistill.errors import UserError
from edgedistill.json_files import numbered_rows

BUILTIN = "builtin:pydocs-answers"
INDEPENDENT_FILE = Path(__file__).parents[1] / "demo" / "data" / "pydocs" / "independent_qa.jsonl"
BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED = 2000, 0


@dataclass(frozen=True)
class Question:
    id: str
    set: str  # "test-pages" | "independent" | a file's stem
    phrasings: tuple[str, ...]  # the first is the one scored; the others feed paraphrase stability
    reference: str


def load_answer_questions(spec: str, test_pages: int, independent: int, paraphrased: int, seed: int = 0) -> list[Question]:
    """The held-out questions: for the builtin set ``test_pages`` test-page questions and
    ``independent`` of the independent set (0 = all of either), the first ``paraphrased``
    of those with all their phrasings and the rest with one; a file's rows likewise."""
    if spec == BUILTIN:
        from edgedistill.datagen.doc_questions import questions_from_pages
        from edgedistill.demo.pydocs import documents

        pages = [Question(q.id, "test-pages", (q.question,), q.answer)
                 for q in questions_from_pages(documents("test"), test_pages, seed)]
        return pages + _file_questions(INDEPENDENT_FILE, "independent", independent, paraphrased)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UserError(f"bench.answers.questions '{spec}' is not a file; give a JSONL of {{\"id\", \"phrasings\", "
                        f"\"answer\"}} rows or {BUILTIN}")
    return _file_questions(path, path.stem, independent, paraphrased)


def _file_questions(path: Path, label: str, limit: int, paraphrased: int) -> list[Question]:
    questions = []
    for number, row in numbered_rows(path, f"bench.answers.questions {path}"):
        phrasings = row.get("phrasings") or ([row["question"]] if isinstance(row.get("question"), str) else None)
        if not (isinstance(row, dict) and isinstance(phrasings, list) and phrasings
                and all(isinstance(p, str) and p.strip() for p in phrasings)
                and isinstance(row.get("answer"), str) and row["answer"].strip()):
            raise UserError(f"bench.answers.questions {path} line {number} needs 'phrasings' (or 'question') and a "
                            "non-empty 'answer'")
        questions.append(Question(str(row.get("id", number)), label, tuple(phrasings), row["answer"]))
    if not questions:
        raise UserError(f"bench.answers.questions {path} holds no questions")
    questions = questions[:limit] if limit else questions
    return [q if i < paraphrased else Question(q.id, q.set, q.phrasings[:1], q.reference) for i, q in enumerate(questions)]


def rouge_l(predictions: list[str], references: list[str]) -> np.ndarray:
    """ROUGE-L F1 of each prediction against its reference (``rouge-score``, stemmed)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return np.array([scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)])


def bootstrap_ratio(numerator: np.ndarray, denominator: np.ndarray, samples: int = BOOTSTRAP_SAMPLES,
                    seed: int = BOOTSTRAP_SEED) -> tuple[float, float] | None:
    """95% percentile interval of mean(numerator) / mean(denominator) over questions
    resampled with replacement, the same resample for both (paired)."""
    if len(numerator) < 2:
        return None
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(numerator), size=(samples, len(numerator)))
    top, bottom = numerator[picks].mean(axis=1), denominator[picks].mean(axis=1)
    ratios = top[bottom > 0] / bottom[bottom > 0]
    if not len(ratios):
        return None
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def first_answers(questions: list[Question], groups: list[list[dict]]) -> list[str]:
    """The answer text to each question's first phrasing (``groups`` in question order)."""
    if len(groups) != len(questions):
        raise ValueError(f"{len(groups)} answer groups for {len(questions)} questions")
    return [group[0]["text"] for group in groups]


def score_model(questions: list[Question], answers: list[str], teacher_answers: list[str] | None) -> dict:
    """Per-model scores (module docstring); ``teacher_answers`` None for the teacher."""
    references = [q.reference for q in questions]
    scores = rouge_l(answers, references)
    result = {"questions": len(questions), "rouge_l": float(scores.mean()), "per_question": scores.tolist()}
    if teacher_answers is not None:
        result["rouge_l_vs_teacher"] = float(rouge_l(answers, teacher_answers).mean())
    sets = sorted({q.set for q in questions})
    result["by_set"] = {name: {"questions": int(sum(q.set == name for q in questions)),
                               "rouge_l": float(mean(s for s, q in zip(scores, questions) if q.set == name))}
                        for name in sets}
    return result


def add_retention(student: dict, teacher: dict, questions: list[Question]) -> None:
    """``retention`` (and its interval, overall and per set) of a student's scores against
    the teacher's, in place."""
    s, t = np.array(student["per_question"]), np.array(teacher["per_question"])
    student["retention"] = float(s.mean() / t.mean()) if t.mean() > 0 else None
    student["retention_ci95"] = bootstrap_ratio(s, t)
    for name, part in student["by_set"].items():
        members = np.array([q.set == name for q in questions])
        teacher_mean = t[members].mean()
        part["retention"] = float(s[members].mean() / teacher_mean) if teacher_mean > 0 else None
        part["retention_ci95"] = bootstrap_ratio(s[members], t[members])


def answer_quality(questions: list[Question], groups_by_model: dict[str, list[list[dict]]], teacher: str) -> dict:
    """Model name -> scores; students carry retention against ``teacher``'s. Models without
    answers (not measured) are left out; without the teacher's answers no retention."""
    teacher_answers = first_answers(questions, groups_by_model[teacher]) if groups_by_model.get(teacher) else None
    results = {}
    for name, groups in groups_by_model.items():
        if not groups:
            continue
        answers = first_answers(questions, groups)
        results[name] = score_model(questions, answers, None if name == teacher else teacher_answers)
    if teacher in results:
        for name, scores in results.items():
            if name != teacher:
                add_retention(scores, results[teacher], questions)
    return results
