"""Teacher-forced quality of every benchmarked model through ``edgedistill.runtime``, so
each artifact format (ONNX int4, GGUF q4_k_m, ...) is scored as it will run, not as the
torch student it came from.

Over the same held-out windows for every model, at every position but the last:

* ``perplexity`` = exp(mean next-token NLL); ``top1_accuracy`` = share of positions whose
  argmax is the next token;
* ``top1_agreement`` = share of positions whose argmax equals the teacher's;
* ``kl_to_teacher`` = mean forward KL(p_teacher || p_model) at T = 1, nats/token
  (the distillation objective's direction);
* ``ece`` / ``overconfidence`` of the top-1 confidence (``overdistill.calibration``);
* ``qa_top1``: QA answers read teacher-forced after their prompt, share of answer tokens
  predicted top-1 (as ``pipeline.evaluate.qa_scores``).

These are ``pipeline.evaluate``'s definitions (``NextTokenTally``, ``compare_on_heldout``)
on runtime logits in numpy, where no torch is loaded; ``tests/benchmarks/test_quality.py``
pins the two equal on the same windows.

Logits are compared over the first ``vocab`` columns (the shared vocabulary; padded rows
are dropped). Sums are pooled over positions (not averaged per window).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from edgedistill.benchmarks.overdistill import calibration


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class _Tally:
    def __init__(self):
        self.nll, self.hits, self.agree, self.kl, self.count = 0.0, 0, 0, 0.0, 0
        self.confidence: list[np.ndarray] = []
        self.correct: list[np.ndarray] = []
        self.qa_hits, self.qa_count = 0, 0

    def add(self, logp: np.ndarray, labels: np.ndarray, teacher_logp: np.ndarray) -> None:
        top1, teacher_top1 = logp.argmax(-1), teacher_logp.argmax(-1)
        self.nll -= logp[np.arange(len(labels)), labels].sum()
        self.hits += int((top1 == labels).sum())
        self.agree += int((top1 == teacher_top1).sum())
        self.kl += float((np.exp(teacher_logp) * (teacher_logp - logp)).sum())
        self.count += len(labels)
        self.confidence.append(np.exp(logp.max(-1)))
        self.correct.append(top1 == labels)

    def result(self) -> dict:
        out = {"perplexity": math.exp(self.nll / self.count), "top1_accuracy": self.hits / self.count,
               "top1_agreement": self.agree / self.count, "kl_to_teacher": max(0.0, self.kl / self.count),
               "eval_positions": self.count}
        out.update(calibration(np.concatenate(self.confidence), np.concatenate(self.correct)))
        out["qa_top1"] = self.qa_hits / self.qa_count if self.qa_count else None
        return out


def score(model, teacher, windows: Sequence[Sequence[int]], qa: Sequence[tuple[list[int], int]], vocab: int) -> dict:
    """Metrics of ``model`` (a loaded runtime Model; ``teacher`` itself gives agreement 1,
    KL 0). ``windows``: token-id lists; ``qa``: (ids, index of the first answer token).
    One model is scored at a time and the teacher's logits are recomputed per window, so
    memory holds two models and one window's logits, whatever the number of artifacts."""
    tally = _Tally()
    for window in windows:
        labels = np.asarray(window[1:])
        teacher_logp = log_softmax(teacher.logits(list(window))[:-1, :vocab])
        logp = teacher_logp if model is teacher else log_softmax(model.logits(list(window))[:-1, :vocab])
        tally.add(logp, labels, teacher_logp)
    for ids, first in qa:
        targets = np.asarray(ids[first:])
        predicted = model.logits(list(ids))[first - 1:-1, :vocab].argmax(-1)
        tally.qa_hits += int((predicted == targets).sum())
        tally.qa_count += len(targets)
    return tally.result()
