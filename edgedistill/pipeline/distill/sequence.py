"""The distill stage's sequence mode: prompts -> teacher responses (generate-data, kept in
the build folder and resumed there) -> packed response windows with sparse KD targets.

Prompts are ``distill.prompts`` (JSONL of ``prompt`` rows) or, by default, the openings
(``distill.prompt_tokens`` tokens) of ``distill.sequence_prompts`` training windows, so
the teacher continues the same documents the logit mode trains on. The teacher is the
recipe's (run here, batched) or ``distill.teacher_api`` (concurrent, retried; a build
killed or failing midway resumes with the prompts not yet answered).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from edgedistill.datagen.api import Sampling, Teacher
from edgedistill.datagen.filters import ResponseFilter, finish_row
from edgedistill.datagen.store import Request, answered_rows, progress_printer, prompt_digest, read_requests
from edgedistill.datagen.templates import apply_template, load_template
from edgedistill.errors import UserError

RESPONSES_FOLDER = "teacher-responses"


def window_prompts(train_ids: torch.Tensor, tokenizer, count: int, prompt_tokens: int, seed: int) -> list[Request]:
    """The decoded openings of ``count`` training windows (a seeded choice)."""
    order = torch.randperm(len(train_ids), generator=torch.Generator().manual_seed(seed + 17))[:count]
    return [Request(f"window-{int(i)}", {"prompt": tokenizer.decode(train_ids[int(i), :prompt_tokens].tolist())})
            for i in order]


def sampling_of(distill_cfg, seed: int) -> Sampling:
    return Sampling(max_tokens=distill_cfg.response_tokens, temperature=distill_cfg.sample_temperature,
                    top_logprobs=distill_cfg.sequence_topk, seed=seed)


def responses_file(folder: Path, teacher_id: str, sampling: Sampling) -> Path:
    """Where this teacher's responses with these settings live. Rows are keyed by prompt
    content (:func:`content_keyed`), so one file serves any prompt set: added prompts are
    the only ones answered, and an edited prompt is a new one."""
    digest = hashlib.sha256(json.dumps([teacher_id, sampling.__dict__], sort_keys=True).encode()).hexdigest()[:16]
    return folder / RESPONSES_FOLDER / f"{digest}.jsonl"


def content_keyed(requests: list[Request]) -> list[Request]:
    """Each request's id extended by a digest of what is sent, so a prompt edited under the
    same id (or a window whose text changed with the data) is never answered from the cache."""
    return [Request(f"{r.id}:{prompt_digest(r.row)}", r.row) for r in requests]


def read_prompt_rows(path: Path) -> list[Request]:
    """``distill.prompts``: 'prompt' rows (chat 'messages' are not supported here)."""
    requests = read_requests(path)
    if any("prompt" not in r.row for r in requests):
        raise UserError(f"distill.prompts {path}: sequence mode takes 'prompt' rows (not chat 'messages')")
    return requests


def ensure_responses(distill_cfg, teacher_dir: Path, teacher_hash: str, requests: list[Request], folder: Path,
                     seed: int) -> tuple[Path, dict]:
    """Generate what is missing; returns (file, info). Raises UserError when API prompts
    still fail after retries (the next build retries them)."""
    from edgedistill.datagen import api, local

    sampling = sampling_of(distill_cfg, seed)
    cot = bool(distill_cfg.template)
    say = progress_printer("teacher responses")
    keep = ResponseFilter(require_answer=cot)

    def finish(row: dict) -> dict:
        return finish_row(row, keep, cot=cot)

    if distill_cfg.teacher_api:
        teacher = Teacher(distill_cfg.teacher_api, distill_cfg.teacher_api_model,
                          os.environ.get(distill_cfg.teacher_api_key_env) or None)
        path = responses_file(folder, f"api:{teacher.base_url}:{teacher.model}", sampling)
        progress = api.generate(requests, path, teacher, sampling, retries=distill_cfg.teacher_api_retries, finish=finish,
                                on_row=say)
        if progress.failed:
            raise UserError(f"{len(progress.failed)} of {progress.total} prompts failed at distill.teacher_api "
                            f"(first: {progress.failed[0]}); fix the API and rerun: answered prompts are kept")
    else:
        path = responses_file(folder, f"local:{teacher_hash}", sampling)
        missing = {r.id for r in requests} - {row["id"] for row in answered_rows(path)}
        teacher = local.LocalTeacher(teacher_dir) if missing else None  # loaded only when there is work
        progress = local.generate(requests, path, teacher, sampling, batch_size=32, finish=finish, on_row=say)
        if progress.failed:
            raise UserError(f"{len(progress.failed)} prompts do not fit the teacher (first: {progress.failed[0]}); "
                            "lower distill.prompt_tokens or distill.response_tokens")
    return path, {"teacher_response_prompts": progress.total, "teacher_responses_generated": progress.answered}


def sequence_windows(cfg: dict, teacher_artifact, tokenizer, data_train, folder: Path, same_vocabulary: bool = True):
    """(train Packed, held-out Packed, SparseTeacher, metrics) of the sequence mode. A
    local teacher of another vocabulary (``same_vocabulary=False``) is distilled by text:
    its responses are re-tokenized by the student and its token ids are dropped (one-hot
    targets, i.e. CE on the teacher's text)."""
    from edgedistill.pipeline.distill.sequence_data import TokenMap, cot_examples, pack, response_example

    distill_cfg, seed = cfg["distill"], cfg["seed"]
    if distill_cfg.prompts:
        requests = read_prompt_rows(Path(distill_cfg.prompts).expanduser())
    else:
        requests = window_prompts(data_train.ids, tokenizer, distill_cfg.sequence_prompts, distill_cfg.prompt_tokens, seed)
    template = load_template(distill_cfg.template)
    if template:  # the teacher reasons, then answers; rows keep the two apart (distill.cot_tasks trains on both)
        requests = [Request(r.id, apply_template(template, r.row)) for r in requests]
    requests = content_keyed(requests)
    path, info = ensure_responses(distill_cfg, teacher_artifact.model_dir, teacher_artifact.hash, requests, folder, seed)
    order = {r.id: index for index, r in enumerate(requests)}  # request order, not completion order: reproducible
    rows = sorted((row for row in answered_rows(path) if row["id"] in order), key=lambda row: order[row["id"]])
    kept = [row for row in rows if row.get("kept", True)]
    if not kept:
        raise UserError(f"the filter kept none of the teacher's {len(rows)} responses ({path}); see their 'filter' field")
    token_map = TokenMap(tokenizer) if distill_cfg.teacher_api else None
    examples = []
    for row in kept:
        if not same_vocabulary and not distill_cfg.teacher_api:
            row = {**row, "logprobs": []}  # ids of the teacher's vocabulary mean nothing to the student
        examples.append(response_example(row, tokenizer, token_map))
        if distill_cfg.cot_tasks:
            examples.extend(cot_examples(row, tokenizer))
    k = max(1, distill_cfg.sequence_topk)
    train, heldout, teacher = pack(examples, cfg["data"].seq_len, k, cfg["data"].validation_fraction, seed)
    info.update({"teacher_responses_kept": len(kept), "teacher_responses_filtered": len(rows) - len(kept),
                 "teacher_response_tokens": sum((r.get("usage") or {}).get("completion_tokens", 0) for r in kept),
                 "teacher_topk_aligned_share": teacher.aligned_share, "sequence_train_windows": len(train)})
    return train, heldout, teacher, info
