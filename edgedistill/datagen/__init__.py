"""Teacher data generation (``edgedistill generate-data``): prompts in, the teacher's
responses out, for sequence-level and chain-of-thought distillation.

The teacher is a local HF folder run in this process (``local.py``, batched, exact token
ids and top-k log-probabilities) or any OpenAI-compatible API (``api.py``: concurrency,
retries with backoff, logprobs where the API offers them). Both write the same resumable
JSONL (``store.py``): one row per distinct prompt with ``response``, ``finish_reason``,
``usage``, optional ``logprobs``, the CoT split (``rationale``/``answer``,
``templates.py``) and the filter verdict (``kept``/``filter``, ``filters.py``). A
``<out stem>.summary.json`` beside it totals every run so far, with the API cost.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgedistill.datagen.api import Sampling, Teacher
from edgedistill.datagen.filters import ResponseFilter, finish_row
from edgedistill.datagen.store import Progress, read_requests, totals
from edgedistill.datagen.templates import apply_template, load_template
from edgedistill.prices import Prices

__all__ = ["Job", "Sampling", "Teacher", "ResponseFilter", "run", "summary_path"]


@dataclass(frozen=True)
class Job:
    prompts: Path
    out: Path
    teacher: Teacher | Path  # an API, or a local HF folder
    sampling: Sampling = Sampling()
    template: str = ""  # a CoT template name or file ("" = none)
    response_filter: ResponseFilter = ResponseFilter()
    concurrency: int = 4  # API requests in flight
    retries: int = 5
    backoff_s: float = 0.5
    batch_size: int = 16  # local teacher: prompts per generate() batch
    price: Prices | None = None  # the API row prices the calls (None: not priced)


def summary_path(out: Path) -> Path:
    return out.with_name(out.stem + ".summary.json")


def run(job: Job, on_row: Callable[[Progress], None] = lambda progress: None) -> dict:
    """Answer every prompt of ``job`` not yet answered; returns (and writes beside the
    output) the summary: this run's counts, totals over the whole file and the cost."""
    template = load_template(job.template)
    requests = read_requests(job.prompts)
    if template:
        requests = [type(r)(r.id, apply_template(template, r.row)) for r in requests]
    response_filter = job.response_filter
    if template and not response_filter.require_answer:
        response_filter = ResponseFilter(**{**response_filter.__dict__, "require_answer": True})

    def finish(row: dict) -> dict:
        return finish_row(row, response_filter, cot=bool(template))

    started = time.perf_counter()
    if isinstance(job.teacher, Teacher):
        from edgedistill.datagen import api

        progress = api.generate(requests, job.out, job.teacher, job.sampling, job.concurrency, job.retries, job.backoff_s,
                                finish=finish, on_row=on_row)
    else:
        from edgedistill.datagen import local

        progress = local.generate(requests, job.out, local.LocalTeacher(job.teacher), job.sampling, job.batch_size,
                                  finish=finish, on_row=on_row)
    seconds = time.perf_counter() - started
    whole = totals(job.out)
    summary = {
        "prompts": progress.total, "answered": progress.answered, "kept": progress.kept, "skipped": progress.skipped,
        "failed": len(progress.failed), "failures": progress.failed[:20], "seconds": round(seconds, 3),
        "run_prompt_tokens": progress.prompt_tokens, "run_completion_tokens": progress.completion_tokens,
        "file": whole,
        "teacher": (f"{job.teacher.base_url} ({job.teacher.model})" if isinstance(job.teacher, Teacher)
                    else f"local {job.teacher}"),
        "template": job.template or None,
        "price": None if job.price is None else job.price.api_row(),
        "run_usd": None if job.price is None else job.price.api_usd(progress.prompt_tokens, progress.completion_tokens),
        "total_usd": None if job.price is None else job.price.api_usd(whole["prompt_tokens"], whole["completion_tokens"]),
    }
    path = summary_path(job.out)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return summary
