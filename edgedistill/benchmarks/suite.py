"""The whole benchmark of one build: the teacher behind an OpenAI-compatible API and every
student artifact behind ``edgedistill serve``, measured the same way over real HTTP with
streaming, then scored teacher-forced through the runtime and priced.

Per served model:

1. probe answers: every phrasing of every probe question, greedy, ``answer_tokens`` max,
   EOS honoured (the over-distillation checks, ``overdistill.py``);
2. latency at concurrency 1 (``latency.py``) on one instance with all cores; its peak
   RSS and cold start are the deployment's;
3. throughput at concurrency N on a second server with N instances (cores / N threads
   each); the teacher behind an external API is measured at N clients the same way.

Latency requests to our own servers send ``ignore_eos`` so every request decodes
``decode_tokens`` tokens; an external API gets plain requests.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from edgedistill.benchmarks import cost, overdistill
from edgedistill.benchmarks.client import Endpoint, TargetError
from edgedistill.benchmarks.latency import aggregate, measure_concurrent, measure_sequential
from edgedistill.benchmarks.served import ServedModel
from edgedistill.prices import Prices

SCHEMA_VERSION = 1
ENTRY_KEYS = (
    "name", "role", "source", "device_ready", "format", "quantization", "served_by", "missing", "error", "bytes", "params", "load_s",
    "peak_rss_bytes", "ttft_p50_s", "ttft_p95_s", "ttft_p99_s", "tpot_p50_s", "tpot_p95_s", "e2e_p50_s", "e2e_p95_s",
    "e2e_p99_s", "tpot_p99_s", "decode_tokens_per_s", "prefill_tokens_per_s", "latency_requests", "exact_token_counts",
    "latency_samples", "concurrent",
    "perplexity",
    "top1_accuracy", "top1_agreement", "kl_to_teacher", "ece", "overconfidence", "qa_top1", "retention",
    "retention_ci95", "retention_of", "retention_detail", "answer_quality", "overdistill", "usd_per_1m_tokens", "usd_per_1m_input_tokens", "usd_per_1m_output_tokens",
    "usd_per_month", "instances_needed", "break_even_requests_per_day", "break_even_vs_teacher_requests_per_day",
    "usd_per_month_saved_vs_teacher", "priced_as", "api_what_if", "warnings",
)


@dataclass
class Target:
    """One thing benchmarked: the teacher or a student artifact."""

    name: str
    role: str  # "teacher" | "student"
    format: str  # "api" | "hf" | "onnx" | "gguf"
    quantization: str | None = None
    path: Path | None = None  # what `edgedistill serve` loads; None for an external API
    bytes: int | None = None
    params: int | None = None
    api: dict | None = None  # {"url", "model", "api_key", "mode"} for an external API
    source: str = "student"  # what an artifact was exported from: the student, or the teacher (only quantized)
    entry: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # a phase that failed while the rest was measured

    def __post_init__(self):
        self.entry = {key: None for key in ENTRY_KEYS}
        self.entry.update(name=self.name, role=self.role, format=self.format, quantization=self.quantization,
                          bytes=self.bytes, params=self.params, missing=False, warnings=[],
                          source=None if self.role == "teacher" else self.source)


@dataclass(frozen=True)
class Settings:
    latency_prompts: list[str]
    probe_groups: list[list[str]]  # phrasings per probe question
    decode_tokens: int
    answer_tokens: int
    repeats: int
    warmup: int
    concurrency: int
    threads: int
    answer_stop: tuple[str, ...] = ()
    student_mode: str = "completions"  # how our servers get the prompts: as text, or as a user message


def measure_served(target: Target, settings: Settings, log: Callable[[str], None]) -> None:
    """Fill ``target.entry`` with answers, latency, RSS and throughput; on a TargetError the
    entry is marked missing with the error (the rest of the benchmark goes on)."""
    try:
        if target.api is not None:
            _measure_api(target, settings, log)
        else:
            _measure_local(target, settings, log)
    except TargetError as exc:
        target.entry.update(missing=True, error=str(exc))
        log(f"{target.name}: not measured: {exc}")


def _measure_api(target: Target, settings: Settings, log) -> None:
    api = target.api

    def endpoint() -> Endpoint:
        return Endpoint(api["url"], api["model"], api.get("api_key"), api.get("mode", "completions"))

    first = endpoint()
    target.entry["served_by"] = first.describe()
    try:
        first.check()
        _answers_and_latency(target, first, settings, extra=None, log=log)
    finally:
        first.close()
    if settings.concurrency == 1:  # the sequential pass was that run
        return
    try:
        target.entry["concurrent"] = measure_concurrent(endpoint, settings.latency_prompts, settings.decode_tokens,
                                                        settings.repeats, settings.concurrency)
    except TargetError as exc:  # e.g. rate-limited at N clients: what was measured at 1 still stands
        target.problems.append(f"throughput at concurrency {settings.concurrency} not measured: {exc}")


def _measure_local(target: Target, settings: Settings, log) -> None:
    limit = max(settings.decode_tokens, settings.answer_tokens)
    extra = {"ignore_eos": True}
    with ServedModel(target.path, target.name, parallel=1, threads=settings.threads, max_tokens_limit=limit) as server:
        backend = {"hf": "torch", "onnx": "onnxruntime", "gguf": "llama.cpp"}.get(target.format, target.format)
        target.entry.update(served_by=f"edgedistill serve ({backend} backend)", load_s=server.load_s)
        first = Endpoint(server.url, target.name, mode=settings.student_mode)
        try:
            _answers_and_latency(target, first, settings, extra, log)
        finally:
            first.close()
        target.entry["peak_rss_bytes"] = server.peak_rss_bytes()
    if settings.concurrency == 1:  # the sequential pass on one instance with every core was that run
        target.entry["concurrent"]["peak_rss_bytes"] = target.entry["peak_rss_bytes"]
        return
    threads = max(1, settings.threads // settings.concurrency)
    try:
        with ServedModel(target.path, target.name, parallel=settings.concurrency, threads=threads,
                         max_tokens_limit=limit) as server:
            concurrent = measure_concurrent(lambda: Endpoint(server.url, target.name, mode=settings.student_mode),
                                            settings.latency_prompts, settings.decode_tokens, settings.repeats,
                                            settings.concurrency, extra)
            target.entry["concurrent"] = {**concurrent, "peak_rss_bytes": server.peak_rss_bytes()}
    except TargetError as exc:  # e.g. N instances do not fit in memory: the single-instance numbers stand
        target.problems.append(f"throughput at concurrency {settings.concurrency} not measured: {exc}")


def _answers_and_latency(target: Target, endpoint: Endpoint, settings: Settings, extra: dict | None, log) -> None:
    started = time.perf_counter()
    stop = {"stop": list(settings.answer_stop)} if settings.answer_stop else None
    groups = [[_answer(endpoint.stream(p, settings.answer_tokens, extra=stop)) for p in phrasings]
              for phrasings in settings.probe_groups]
    target.entry["overdistill"] = overdistill.answer_checks(groups)
    target.entry["answers"] = groups
    summary, timed = measure_sequential(endpoint, settings.latency_prompts, settings.decode_tokens, settings.repeats,
                                        settings.warmup, extra)
    wall = summary.pop("timed_wall_s")
    if settings.concurrency == 1:
        target.entry["concurrent"] = aggregate(timed, wall, 1)
    target.entry.update(summary)
    target.entry["latency_samples"] = [{"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                                        "ttft_s": r.ttft_s, "e2e_s": r.e2e_s} for r in timed]
    log(f"{target.name}: {len(groups)} probe questions answered, {summary['latency_requests']} latency requests "
        f"({time.perf_counter() - started:.1f}s)")


def _answer(result) -> dict:
    return {"text": result.text, "completion_tokens": result.completion_tokens, "finish_reason": result.finish_reason}


def add_quality(teacher: Target, students: list[Target], scores: dict[str, dict]) -> None:
    """Teacher-forced scores (``quality.score`` per name) and retention vs the teacher."""
    for target in (teacher, *students):
        if target.name in scores:
            target.entry.update({k: v for k, v in scores[target.name].items() if k in ENTRY_KEYS})
    t = teacher.entry
    for target in (teacher, *students):
        e = target.entry
        detail = {"top1": _ratio(e["top1_accuracy"], t["top1_accuracy"]), "qa_top1": _ratio(e["qa_top1"], t["qa_top1"]),
                  "perplexity": _ratio(t["perplexity"], e["perplexity"])}  # lower is better: teacher / model
        e["retention_detail"], e["retention"], e["retention_of"] = detail, detail["top1"], "top1"


def add_answer_quality(teacher: Target, students: list[Target], questions: list) -> None:
    """ROUGE-L of every model's answers to the held-out questions (``answers.py``); answer
    retention becomes each student's ``retention`` (token metrics stay in retention_detail)."""
    from edgedistill.benchmarks.answers import answer_quality

    groups = {t.name: t.entry.get("answers") for t in (teacher, *students)}
    scored = answer_quality(questions, groups, teacher.name)
    for target in (teacher, *students):
        e = target.entry
        e["answer_quality"] = scored.get(target.name)
        if e["answer_quality"] is None:
            continue
        e["retention_detail"] = {**(e["retention_detail"] or {}), "answers_rouge_l": e["answer_quality"].get("retention")}
        e["retention"] = 1.0 if target is teacher else e["answer_quality"].get("retention")
        e["retention_ci95"] = None if target is teacher else e["answer_quality"].get("retention_ci95")
        e["retention_of"] = "answers_rouge_l"


def add_comparisons(teacher: Target, students: list[Target], thresholds: dict) -> None:
    """Length ratios against the teacher's answers (in words: an API teacher counts tokens
    with its own tokenizer) and every entry's warnings."""
    teacher_words = (teacher.entry.get("overdistill") or {}).get("mean_answer_words")
    if teacher.entry.get("overdistill"):
        teacher.entry["overdistill"]["length_ratio"] = 1.0
    for target in students:
        checks = target.entry.get("overdistill")
        if checks is not None:
            checks["length_ratio"] = checks["mean_answer_words"] / teacher_words if teacher_words else None
        target.entry["warnings"] = overdistill.warnings_for(target.entry, teacher.entry, thresholds)
    for target in (teacher, *students):
        if target.entry["missing"]:
            target.entry["warnings"].insert(0, f"not measured: {target.entry['error']}")
        target.entry["warnings"] += target.problems


def add_costs(teacher: Target, students: list[Target], prices: Prices, traffic: cost.Traffic) -> None:
    """A teacher behind an API at its per-token prices; a teacher that ran here self-hosted
    on the students' hardware row at its measured throughput, the API price then a what-if
    (``cost.py``); each student on rented hardware at its measured throughput, with its
    break-even against the API and against the self-hosted teacher."""
    def rates(target: Target) -> tuple[float | None, float | None]:
        concurrent = target.entry.get("concurrent") or {}
        return concurrent.get("prefill_tokens_per_s"), concurrent.get("decode_tokens_per_s")

    teacher_capacity = None
    if teacher.format == "api":
        if not teacher.entry["missing"]:
            teacher.entry.update(cost.api_cost(prices, traffic), priced_as=f"API {prices.api_name}")
    else:
        teacher.entry.update(cost.self_hosted_cost(prices, traffic, *rates(teacher)),
                             priced_as=f"self-hosted on {prices.hardware_name}",
                             api_what_if=cost.api_what_if(prices, traffic))
        teacher.entry["break_even_requests_per_day"] = None  # the teacher's own API break-even is not a question asked
        teacher_capacity = cost.capacity_requests_per_day(traffic, *rates(teacher))
    for target in students:
        target.entry.update(cost.self_hosted_cost(prices, traffic, *rates(target)),
                            priced_as=f"self-hosted on {prices.hardware_name}")
        if teacher.format != "api":
            target.entry.update(cost.against_self_hosted_teacher(
                target.entry, teacher.entry, teacher_capacity, cost.capacity_requests_per_day(traffic, *rates(target))))
        if target.entry["usd_per_month"] is not None and target.entry["break_even_requests_per_day"] is None:
            target.entry["warnings"].append("self-hosting costs more per request than the API even fully used")


def results_document(teacher: Target, students: list[Target], settings: Settings, traffic: cost.Traffic,
                     prices: Prices, build: dict, machine: dict, extra_settings: dict, warnings: list[str]) -> dict:
    """results.json (schema in docs/bench.md, section "bench results.json")."""
    return {
        "schema_version": SCHEMA_VERSION,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "build": build,
        "machine": machine,
        "settings": {"latency_max_tokens": settings.decode_tokens, "answer_max_tokens": settings.answer_tokens,
                     "answer_stop": list(settings.answer_stop), "student_api_mode": settings.student_mode,
                     "latency_prompts": len(settings.latency_prompts), "probe_questions": len(settings.probe_groups),
                     "repeats": settings.repeats, "warmup": settings.warmup, "concurrency": settings.concurrency,
                     "threads": settings.threads, **extra_settings},
        "traffic": {"requests_per_day": traffic.requests_per_day, "input_tokens_per_request": traffic.input_tokens_per_request,
                    "output_tokens_per_request": traffic.output_tokens_per_request, "utilization": traffic.utilization},
        "prices": prices.describe(),
        "thresholds": dict(overdistill.THRESHOLDS),
        "teacher": _public(teacher.entry),
        "artifacts": [_public(t.entry) for t in students],
        "warnings": warnings,
    }


def _public(entry: dict) -> dict:
    return {key: entry.get(key) for key in ENTRY_KEYS}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b and math.isfinite(a / b) else None


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
