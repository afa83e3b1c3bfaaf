"""``distill.answers``: sequence KD on the teacher's chat answers, inside logit KD.

Documentation questions are built from the train pages of ``data.path``
(``datagen/doc_questions.py``); the local teacher answers each one as a one-turn chat
(its chat template, ``distill.response_tokens``, ``distill.sample_temperature``), kept in
the build folder's responses and resumed there. Each answer becomes a conversation in the
student's chat template whose assistant tokens are the only targets (and the end of turn
only when the teacher stopped by itself: an answer cut at ``response_tokens`` must not
teach the student to stop mid-sentence). The conversations are packed into windows of
``data.seq_len`` and join the documentation windows, repeated until they are
``answers.share`` of the training windows, so every step mixes both. On these windows the
logit-KD loss is the teacher's full distribution at each answer token (the teacher sees
the same conversation), i.e. word-level KD on sequence-KD data.
"""

from __future__ import annotations

import math
from pathlib import Path

from edgedistill.datagen.api import Sampling
from edgedistill.datagen.filters import ResponseFilter, finish_row
from edgedistill.datagen.store import Request, answered_rows, progress_printer
from edgedistill.errors import UserError


def check_answers_supported(recipe) -> None:
    """Refuse what ``distill.answers`` cannot be combined with, before anything runs."""
    answers = recipe.distill.answers
    if not answers.questions:
        return
    if answers.source == "reference" and recipe.distill.alpha > 0:
        raise UserError("distill.answers.source=reference trains on the pages' own answers (no teacher), but "
                        f"distill.alpha={recipe.distill.alpha:g} still distills; set distill.alpha=0")
    if recipe.distill.mode != "logit":
        raise UserError(f"distill.answers.questions is a part of the logit mode (distill.mode={recipe.distill.mode}); "
                        "set distill.mode=logit or distill.answers.questions=0")
    if recipe.teacher == "api" or (recipe.teacher_api.url and recipe.teacher_api.distill):
        raise UserError("distill.answers needs a local teacher (it answers the questions here and gives the full "
                        "distribution on them); use distill.mode=sequence with teacher_api.mode=chat for an API teacher")


def questions_of(data_path: str, count: int, seed: int):
    """``count`` documentation questions from the pages of ``data_path``."""
    from edgedistill.datagen.doc_questions import questions_from_pages
    from edgedistill.data import BUILTIN_CORPORA, load_rows

    if data_path in BUILTIN_CORPORA and BUILTIN_CORPORA[data_path][1]:
        from edgedistill.demo.pydocs import documents

        pages = documents(BUILTIN_CORPORA[data_path][1])  # with their paths: questions name the module
    else:
        pages = [row for row in load_rows(data_path) if "text" in row]
    questions = questions_from_pages(pages, count, seed)
    if not questions:
        raise UserError(f"data.path {data_path} documents no signatures to ask about (distill.answers builds questions "
                        "from 'name(args)' lines followed by an indented description); set distill.answers.questions=0")
    return questions


def chat_rows(questions) -> list[Request]:
    return [Request(q.id, {"messages": [{"role": "user", "content": q.question}], "reference": q.answer})
            for q in questions]


def teacher_answers(cfg: dict, teacher_artifact, folder: Path) -> tuple[list[dict], dict]:
    """The teacher's kept answers (request order) and generation metrics; missing answers
    are generated (batched) and appended to the responses file first."""
    from edgedistill.datagen import local
    from edgedistill.pipeline.distill.sequence import content_keyed, responses_file

    distill_cfg, seed = cfg["distill"], cfg["seed"]
    requests = content_keyed(chat_rows(questions_of(cfg["data"].path, distill_cfg.answers.questions, seed)))
    if distill_cfg.answers.source == "reference":  # ground truth from the pages: nothing is generated
        rows = [{"id": r.id, **r.row, "response": r.row["reference"], "finish_reason": "stop"} for r in requests]
        return rows, {"teacher_answers": 0, "reference_answers": len(rows)}
    sampling = Sampling(max_tokens=distill_cfg.response_tokens, temperature=distill_cfg.sample_temperature,
                        top_logprobs=0, seed=seed)
    path = responses_file(folder, f"local:{teacher_artifact.hash}:bos:chat", sampling)
    missing = {r.id for r in requests} - {row["id"] for row in answered_rows(path)}
    teacher = local.LocalTeacher(teacher_artifact.model_dir) if missing else None
    keep = ResponseFilter()
    progress = local.generate(requests, path, teacher, sampling, batch_size=32,
                              finish=lambda row: finish_row(row, keep, cot=False), on_row=progress_printer("teacher answers"))
    if progress.failed:
        raise UserError(f"{len(progress.failed)} questions do not fit the teacher (first: {progress.failed[0]}); "
                        "lower distill.response_tokens")
    order = {r.id: index for index, r in enumerate(requests)}
    rows = sorted((row for row in answered_rows(path) if row["id"] in order), key=lambda row: order[row["id"]])
    kept = [row for row in rows if row.get("kept", True)]
    if not kept:
        raise UserError(f"the filter kept none of the teacher's {len(rows)} answers ({path}); see their 'filter' field")
    return kept, {"teacher_answers": len(rows), "teacher_answers_kept": len(kept),
                  "teacher_answers_generated": progress.answered,
                  "teacher_answers_stopped": sum(row.get("finish_reason") == "stop" for row in kept) / len(kept)}


def conversation(row: dict, tokenizer, chat_template: str = "") -> tuple[list[int], list[bool]]:
    """(ids, targets) of one answered question in the student's chat template: the prompt
    rendered with the generation prompt (context), the answer's tokens (targets), then the
    end-of-turn token as a target when the teacher stopped by itself."""
    from edgedistill.data import window_bos
    from edgedistill.runtime.chat import CHAT_TEMPLATES

    template = CHAT_TEMPLATES.get(chat_template, chat_template) or None
    if template is None and not tokenizer.chat_template:
        raise UserError("distill.answers trains on conversations but the student's tokenizer has no chat template; "
                        "set data.chat_template (chatml, or a Jinja template)")
    prompt = tokenizer.apply_chat_template(row["messages"], add_generation_prompt=True, tokenize=False,
                                           chat_template=template)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    bos = window_bos(tokenizer)
    if bos is not None and ids[:1] != [bos]:
        ids = [bos, *ids]
    answer = tokenizer(row["response"], add_special_tokens=False)["input_ids"]
    end = [tokenizer.eos_token_id] if row.get("finish_reason") == "stop" and tokenizer.eos_token_id is not None else []
    return ids + answer + end, [False] * len(ids) + [True] * (len(answer) + len(end))


def answer_windows(rows: list[dict], tokenizer, seq_len: int, chat_template: str = ""):
    """The conversations concatenated and cut into (N, seq_len) windows (the Packed shape of
    the documentation windows); windows without a target are dropped."""
    import torch

    from edgedistill.data import Packed

    ids, targets = [], []
    for row in rows:
        row_ids, row_targets = conversation(row, tokenizer, chat_template)
        ids.extend(row_ids)
        targets.extend(row_targets)
    count = len(ids) // seq_len
    if count < 1:
        raise UserError(f"the teacher's answers give {len(ids)} tokens, less than one window of data.seq_len={seq_len}; "
                        "ask more questions (distill.answers.questions)")
    cut = count * seq_len
    packed = Packed(torch.tensor(ids[:cut]).view(count, seq_len), torch.tensor(targets[:cut]).view(count, seq_len))
    return packed[packed.targets[:, 1:].any(dim=1)]


def mixed_windows(docs, answers, share: float):
    """``docs`` and ``answers`` (Packed) in one set where the answers are about ``share`` of
    the windows: repeated whole, then their first windows, as often as needed; never cut
    below one copy of each."""
    import torch

    from edgedistill.data import Packed

    wanted = math.ceil(share * len(docs) / (1 - share)) if share < 1 else len(answers)
    wanted = max(wanted, len(answers))
    reps = [answers] * (wanted // len(answers)) + ([answers[: wanted % len(answers)]] if wanted % len(answers) else [])
    return Packed(torch.cat([docs.ids, *(r.ids for r in reps)]), torch.cat([docs.targets, *(r.targets for r in reps)]))


def with_teacher_answers(cfg: dict, teacher_artifact, tokenizer, train, folder: Path):
    """(train windows with the answer windows mixed in, metrics)."""
    distill_cfg = cfg["distill"]
    rows, metrics = teacher_answers(cfg, teacher_artifact, folder)
    answers = answer_windows(rows, tokenizer, cfg["data"].seq_len, cfg["data"].chat_template)
    mixed = mixed_windows(train, answers, distill_cfg.answers.share)
    metrics.update({"answer_windows": len(answers), "answer_windows_share": 1 - len(train) / len(mixed),
                    "answer_target_tokens": int(answers.targets.sum())})
    return mixed, metrics
