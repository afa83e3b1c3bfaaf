"""Logit and on-policy KD from a teacher behind an OpenAI-compatible API (``teacher_api.url``).

An API returns no logits, but ``/v1/completions`` with ``echo: true`` and ``logprobs: k``
(legacy OpenAI, vLLM, ``edgedistill serve``) returns, for every prompt token, its
log-probability and the k most likely tokens at that position (raw log-softmax at
T = 1). The windows are sent as token ids, so the positions line up with ours exactly
when the teacher shares the student's tokenizer; the teacher's top-k then trains the
student through the sparse forward-KL path (``losses.sparse_forward_kl_per_token``: k
tokens plus a tail bucket) at T = 1, as an offline top-k cache would.

* Logit mode: every training and held-out window is scored once, written as rows to
  ``teacher-scores/<digest>.jsonl`` in the build folder (resumed after a kill or a
  failing API, retried with backoff, like generate-data).
* On-policy mode: the same windows for the data steps, and each on-policy batch of
  student samples is scored live when it is drawn.

Token texts are mapped back to ids with :class:`TokenMap`. A position whose token text is
not the text of the id we sent (another tokenizer) keeps only its data token as a one-hot
target (the KD term is then CE there); alternatives whose text names no single id (byte
pieces, special tokens) are dropped, their mass lands in the tail bucket. The share of
positions that lined up is reported as ``teacher_topk_aligned_share``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from edgedistill.datagen import api
from edgedistill.datagen.store import Request, answered_rows, progress_printer
from edgedistill.openai_client import ApiError
from edgedistill.errors import UserError
from edgedistill.pipeline.distill.losses import LOGPROB_FLOOR
from edgedistill.pipeline.distill.sequence_data import SparseTeacher, TokenMap, set_sparse
from edgedistill.pipeline.distill.teacher_signals import SCORES_FOLDER


def api_teacher(api_cfg) -> api.Teacher:
    """The recipe's ``teacher_api`` section as a client-side teacher (its key read from the environment)."""
    return api.Teacher(api_cfg.url, api_cfg.model, os.environ.get(api_cfg.key_env) or None)


def topk_from_scores(ids: torch.Tensor, scores: list[list[dict]], k: int, token_map: TokenMap):
    """(top ids (B, L-1, k) int32, log-probs (B, L-1, k) fp32, aligned positions) from the
    API's per-token entries of rows ``ids`` (B, L): position j's target is token j + 1's entry."""
    rows, length = ids.shape
    top_ids = np.repeat(ids[:, 1:].numpy().astype(np.int32)[..., None], k, axis=2)  # one-hot fallback
    top_lps = np.full((rows, length - 1, k), LOGPROB_FLOOR, dtype=np.float32)
    top_lps[..., 0] = 0.0
    aligned = 0
    for row, entries in enumerate(scores):
        if len(entries) != length:
            continue
        for position in range(length - 1):
            entry, wanted = entries[position + 1], int(ids[row, position + 1])
            if not token_map.matches(entry["token"], wanted):
                continue
            dist: dict[int, float] = {}
            for text, logprob in entry.get("top") or []:
                token = token_map.get(text)
                if token is not None and token not in dist:
                    dist[token] = float(logprob)
            if not dist and entry.get("logprob") is not None:
                dist[wanted] = float(entry["logprob"])
            if dist:
                set_sparse(top_ids[row, position], top_lps[row, position], sorted(dist.items(), key=lambda item: -item[1]))
                aligned += 1
    return top_ids, top_lps, aligned


def scored_windows(api_cfg, k: int, windows: torch.Tensor, tokenizer, folder: Path) -> SparseTeacher:
    """The API teacher's top-k over every window (train then held-out), resumable in ``folder``."""
    teacher = api_teacher(api_cfg)
    digest = hashlib.sha256(json.dumps([teacher.base_url, teacher.model, k]).encode()
                            + windows.to(torch.int64).numpy().tobytes()).hexdigest()[:16]
    path = folder / SCORES_FOLDER / f"{digest}.jsonl"
    requests = [Request(f"w{i}", {"prompt": row.tolist()}) for i, row in enumerate(windows)]

    progress = api.generate(requests, path, teacher, api.Sampling(max_tokens=1, top_logprobs=k, echo=True),
                            retries=api_cfg.retries, on_row=progress_printer("teacher API scoring"))
    if progress.failed:
        raise UserError(f"{len(progress.failed)} of {progress.total} windows failed at teacher_api.url "
                        f"(first: {progress.failed[0]}); fix the API and rerun: scored windows are kept")
    by_id = {row["id"]: row["prompt_logprobs"] for row in answered_rows(path)}
    scores = [by_id[f"w{i}"] for i in range(len(windows))]
    top_ids, top_lps, aligned = topk_from_scores(windows, scores, k, TokenMap(tokenizer))
    return SparseTeacher(top_ids, top_lps, aligned / max(1, windows.shape[0] * (windows.shape[1] - 1)))


def score_live(api_cfg, k: int, ids: torch.Tensor, token_map: TokenMap) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The API teacher's top-k over rows ``ids`` (B, L) now (on-policy samples)."""
    try:
        scores = api.score(ids.tolist(), api_teacher(api_cfg), k, retries=api_cfg.retries)
    except ApiError as exc:
        raise UserError(f"teacher_api.url failed while scoring on-policy samples: {exc}; fix the API and rerun "
                        "(the build resumes from its last checkpoint)") from None
    top_ids, top_lps, aligned = topk_from_scores(ids, scores, k, token_map)
    return torch.from_numpy(top_ids.astype(np.int64)), torch.from_numpy(top_lps), aligned
