"""The distill stage's sequence mode: prompts -> teacher responses (generate-data, kept in
the build folder and resumed there) -> packed response windows with sparse KD targets.

Prompts are ``distill.sequence.prompts`` (JSONL of ``prompt`` rows) or, by default, the
openings (``distill.prompt_tokens`` tokens) of ``distill.sequence.windows`` training
windows, so the teacher continues the same documents the logit mode trains on. The teacher
is the recipe's (run here, batched) or ``teacher_api.url`` (concurrent, retried; a build
killed or failing midway resumes with the prompts not yet answered).

With ``teacher_api.mode: chat`` each prompt goes to ``/chat/completions`` as one user
message, and the student trains on the conversation rendered by its own chat template,
the assistant turn (and its end of turn) being the only targets: a chat teacher's answer
is learnt as an answer, not as a continuation of the prompt's text.
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
from edgedistill.pipeline.distill.teacher_signals import RESPONSES_FOLDER



def window_prompts(train_ids: torch.Tensor, tokenizer, count: int, prompt_tokens: int, seed: int) -> list[Request]:
    """The decoded openings of ``count`` training windows (a seeded choice)."""
    order = torch.randperm(len(train_ids), generator=torch.Generator().manual_seed(seed + 17))[:count]
    return [Request(f"window-{int(i)}", {"prompt": tokenizer.decode(train_ids[int(i), :prompt_tokens].tolist())})
            for i in order]


def sampling_of(distill_cfg, seed: int) -> Sampling:
    return Sampling(max_tokens=distill_cfg.response_tokens, temperature=distill_cfg.sample_temperature,
                    top_logprobs=distill_cfg.sequence.topk, seed=seed)


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
    """``distill.sequence.prompts``: 'prompt' rows (chat 'messages' are not supported here)."""
    requests = read_requests(path)
    if any("prompt" not in r.row for r in requests):
        raise UserError(f"distill.sequence.prompts {path}: sequence mode takes 'prompt' rows (not chat 'messages'; "
                        "teacher_api.mode=chat sends each prompt as a user message)")
    return requests


def ensure_responses(distill_cfg, api_cfg, teacher_dir: Path | None, teacher_hash: str, requests: list[Request],
                     folder: Path, seed: int) -> tuple[Path, dict]:
    """Generate what is missing; returns (file, info). Raises UserError when API prompts
    still fail after retries (the next build retries them)."""
    from edgedistill.datagen import api, local

    sampling = sampling_of(distill_cfg, seed)
    cot = bool(distill_cfg.sequence.template)
    say = progress_printer("teacher responses")
    keep = ResponseFilter(require_answer=cot)

    def finish(row: dict) -> dict:
        return finish_row(row, keep, cot=cot)

    if api_cfg is not None:
        teacher = Teacher(api_cfg.url, api_cfg.model, os.environ.get(api_cfg.key_env) or None)
        if api_cfg.mode == "chat":
            requests = [Request(r.id, as_chat(r.row)) for r in requests]
        path = responses_file(folder, f"api:{teacher.base_url}:{teacher.model}", sampling)
        progress = api.generate(requests, path, teacher, sampling, retries=api_cfg.retries, finish=finish, on_row=say)
        if progress.failed:
            raise UserError(f"{len(progress.failed)} of {progress.total} prompts failed at teacher_api.url "
                            f"(first: {progress.failed[0]}); fix the API and rerun: answered prompts are kept")
    else:
        # ":bos": responses since prompts open with BOS where the tokenizer adds one (older files are not reused)
        path = responses_file(folder, f"local:{teacher_hash}:bos", sampling)
        missing = {r.id for r in requests} - {row["id"] for row in answered_rows(path)}
        teacher = local.LocalTeacher(teacher_dir) if missing else None  # loaded only when there is work
        progress = local.generate(requests, path, teacher, sampling, batch_size=32, finish=finish, on_row=say)
        if progress.failed:
            raise UserError(f"{len(progress.failed)} prompts do not fit the teacher (first: {progress.failed[0]}); "
                            "lower distill.prompt_tokens or distill.response_tokens")
    return path, {"teacher_response_prompts": progress.total, "teacher_responses_generated": progress.answered}


def as_chat(row: dict) -> dict:
    """A prompt row as a one-turn conversation for ``/chat/completions`` (the prompt is kept
    to key and read the row)."""
    return {**row, "messages": [{"role": "user", "content": row["prompt"]}]}


def chat_example(row: dict, tokenizer, chat_template: str):
    """A chat teacher's answer as the student's conversation: the student's chat template over
    the user turn and the answer, targets on the assistant turn only (no token-level teacher
    distribution: the template puts the answer's tokens in another context)."""
    from edgedistill.data import encode_row
    from edgedistill.pipeline.distill.sequence_data import Example

    messages = [*row["messages"], {"role": "assistant", "content": row["response"]}]
    ids, targets = encode_row({"messages": messages}, tokenizer, chat_template)
    return Example(ids, targets, [None] * len(ids), False)


def sequence_windows(cfg: dict, teacher_artifact, tokenizer, data_train, folder: Path, same_vocabulary: bool = True):
    """(train Packed, held-out Packed, SparseTeacher, metrics) of the sequence mode. A
    local teacher of another vocabulary (``same_vocabulary=False``) is distilled by text:
    its responses are re-tokenized by the student and its token ids are dropped (one-hot
    targets, i.e. CE on the teacher's text)."""
    from edgedistill.pipeline.distill.sequence_data import TokenMap, cot_examples, pack, response_example

    distill_cfg, seed, api_cfg = cfg["distill"], cfg["seed"], cfg.get("teacher_api")
    sequence = distill_cfg.sequence
    if sequence.prompts:
        requests = read_prompt_rows(Path(sequence.prompts).expanduser())
    else:
        requests = window_prompts(data_train.ids, tokenizer, sequence.windows, distill_cfg.prompt_tokens, seed)
    template = load_template(sequence.template)
    if template:  # the teacher reasons, then answers; rows keep the two apart (sequence.cot_tasks trains on both)
        requests = [Request(r.id, apply_template(template, r.row)) for r in requests]
    requests = content_keyed(requests)
    remote = api_cfg is not None
    local_dir = None if remote else teacher_artifact.model_dir
    path, info = ensure_responses(distill_cfg, api_cfg, local_dir, teacher_artifact.hash, requests, folder, seed)
    order = {r.id: index for index, r in enumerate(requests)}  # request order, not completion order: reproducible
    rows = sorted((row for row in answered_rows(path) if row["id"] in order), key=lambda row: order[row["id"]])
    kept = [row for row in rows if row.get("kept", True)]
    if not kept:
        raise UserError(f"the filter kept none of the teacher's {len(rows)} responses ({path}); see their 'filter' field")
    token_map = TokenMap(tokenizer) if remote else None
    chat = remote and api_cfg.mode == "chat"
    examples = []
    for row in kept:
        if not same_vocabulary and not remote:
            row = {**row, "logprobs": []}  # ids of the teacher's vocabulary mean nothing to the student
        if chat:
            examples.append(chat_example(row, tokenizer, cfg["data"].chat_template))
        else:
            examples.append(response_example(row, tokenizer, token_map))
        if sequence.cot_tasks:
            examples.extend(cot_examples(row, tokenizer))
    k = max(1, sequence.topk)
    train, heldout, teacher = pack(examples, cfg["data"].seq_len, k, cfg["data"].validation_fraction, seed)
    info.update({"teacher_responses_kept": len(kept), "teacher_responses_filtered": len(rows) - len(kept),
                 "teacher_response_tokens": sum((r.get("usage") or {}).get("completion_tokens", 0) for r in kept),
                 "teacher_topk_aligned_share": teacher.aligned_share, "sequence_train_windows": len(train)})
    return train, heldout, teacher, info
