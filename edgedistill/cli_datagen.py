"""``edgedistill generate-data``: the teacher answers a prompts file (sequence-level and
chain-of-thought distillation data). Registered on the app in ``cli.py``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from edgedistill.errors import UserError

API_KEY_ENV = "EDGEDISTILL_TEACHER_API_KEY"


def generate_data(
    prompts: Path = typer.Argument(..., help="JSONL of {\"prompt\": text} or {\"messages\": [...]} rows (optional \"id\")"),
    out: Path = typer.Option(..., "--out", help="output JSONL; rerunning skips prompts already in it"),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="local HF folder (or builtin:pydocs-teacher), run here"),
    teacher_api: Optional[str] = typer.Option(None, "--teacher-api", help="OpenAI-compatible base URL, e.g. http://host:8000/v1"),
    teacher_model: str = typer.Option("teacher", "--teacher-model", help="model name sent to --teacher-api"),
    teacher_api_key_env: str = typer.Option(API_KEY_ENV, "--teacher-api-key-env",
                                            help="environment variable holding the API key (sent as a Bearer token)"),
    template: str = typer.Option("", "--template", help="chain-of-thought template: step-by-step, or a file with {prompt}"),
    max_tokens: int = typer.Option(256, "--max-tokens", min=1, help="most tokens per response"),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 = greedy"),
    top_logprobs: int = typer.Option(0, "--top-logprobs", min=0, max=20, help="teacher alternatives kept per token (0-20)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="sampling seed"),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="API requests in flight"),
    retries: int = typer.Option(5, "--retries", min=0, help="retries per request on connection errors, 429 and 5xx"),
    backoff: float = typer.Option(0.5, "--backoff", min=0.0, help="first retry wait in seconds (doubles each retry)"),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="local teacher: prompts per batch"),
    min_words: int = typer.Option(1, "--min-words", min=0, help="drop shorter responses"),
    max_words: int = typer.Option(0, "--max-words", min=0, help="drop longer responses (0 = no limit)"),
    max_repetition: float = typer.Option(0.5, "--max-repetition", min=0.0, max=1.0,
                                         help="drop responses with more repeated word 4-grams than this share"),
    drop_truncated: bool = typer.Option(False, "--drop-truncated", help="drop responses cut at --max-tokens"),
    prices: Optional[Path] = typer.Option(None, "--prices", help="price table YAML (default: the shipped assumptions)"),
    api_price: str = typer.Option("", "--api-price", help="API row of the price table (default: its api_default)"),
) -> int:
    """Have the teacher answer PROMPTS (resumable, deduplicated, filtered), for `distill.mode: sequence`."""
    from rich.console import Console

    from edgedistill.openai_client import check_base_url
    from edgedistill.datagen import Job, ResponseFilter, Sampling, Teacher, run
    from edgedistill.datagen.store import progress_printer, usd

    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give the JSONL file to write, e.g. {out / 'responses.jsonl'}")
    if (teacher is None) == (teacher_api is None):
        raise UserError("give the teacher as --teacher FOLDER (run here) or --teacher-api URL (exactly one)")
    price = None
    if teacher_api is not None:
        check_base_url(teacher_api, "--teacher-api")
        source = Teacher(teacher_api, teacher_model, os.environ.get(teacher_api_key_env) or None)
        from edgedistill.prices import load_prices

        price = load_prices(str(prices) if prices else "", api_price)
    else:
        from edgedistill.pipeline.teacher import resolve_source

        resolved = resolve_source(teacher)
        if resolved["kind"] != "local":
            raise UserError(f"--teacher {teacher}: give an HF model folder (or builtin:pydocs-teacher)")
        source = Path(resolved["path"])
    job = Job(prompts, out, source, Sampling(max_tokens, temperature, top_logprobs, seed), template,
              ResponseFilter(min_words, max_words, max_repetition, drop_truncated), concurrency, retries, backoff,
              batch_size, price)
    err = Console(stderr=True, highlight=False)
    on_row = progress_printer("generate-data", price, every_s=2.0)

    summary = run(job, on_row)
    whole = summary["file"]
    cost = (f"; API cost this run {usd(summary['run_usd'])}, whole file {usd(summary['total_usd'])} "
            f"at {price.api_name} prices" if price else "")
    print(f"{whole['rows']} answered in {out} ({whole['kept']} kept by the filter; {summary['answered']} this run, "
          f"{summary['skipped']} already there) in {summary['seconds']:.1f}s; {whole['prompt_tokens']:,} prompt + "
          f"{whole['completion_tokens']:,} completion tokens{cost}")
    if summary["failed"]:
        err.print(f"error: {summary['failed']} prompt(s) failed (first: {summary['failures'][0]}); rerun the same "
                  "command to retry them", markup=False)
        return 1
    return 0

