"""Latency and throughput of one endpoint over real HTTP with streaming.

* Concurrency 1: ``warmup`` untimed passes, then ``repeats`` passes over the prompt set,
  one request at a time. Percentiles (p50/p95/p99, linear interpolation) are taken over
  all timed requests: TTFT, time per output token after the first (TPOT), end to end.
  ``decode_tokens_per_s`` is the median of ``(completion_tokens - 1) / (e2e - ttft)``
  and ``prefill_tokens_per_s`` the median of ``prompt_tokens / ttft`` (TTFT includes
  the HTTP round trip, so this is the prefill rate a client sees).
* Concurrency N: ``N`` clients each send the prompt set ``repeats`` times, back to back;
  ``output_tokens_per_s`` = all completion tokens / wall time of the whole run (prefill
  included). For pricing, the run's rates split in two: ``prefill_tokens_per_s`` = N x
  all prompt tokens / all TTFTs and ``decode_tokens_per_s`` = N x all tokens after the
  first / all (e2e - TTFT): what N busy instances process per second of each phase.

A request whose answer has no text (TTFT undefined) counts in the end-to-end and token
figures but not in the TTFT and prefill ones.
"""

from __future__ import annotations

import math
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from edgedistill.benchmarks.client import Endpoint, RequestResult


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between order statistics."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(results: list[RequestResult]) -> dict:
    answered = [r for r in results if r.text]  # TTFT is the first streamed text
    ttft = [r.ttft_s for r in answered]
    tpot = [r.tpot_s for r in results if r.tpot_s is not None]
    e2e = [r.e2e_s for r in results]
    return {
        "ttft_p50_s": percentile(ttft, 50), "ttft_p95_s": percentile(ttft, 95), "ttft_p99_s": percentile(ttft, 99),
        "tpot_p50_s": percentile(tpot, 50), "tpot_p95_s": percentile(tpot, 95), "tpot_p99_s": percentile(tpot, 99),
        "e2e_p50_s": percentile(e2e, 50), "e2e_p95_s": percentile(e2e, 95), "e2e_p99_s": percentile(e2e, 99),
        "decode_tokens_per_s": _median([r.decode_tokens_per_s for r in results]),
        "prefill_tokens_per_s": _median([r.prefill_tokens_per_s for r in answered]),
        "latency_requests": len(results),
        "exact_token_counts": all(r.exact_counts for r in results),
    }


def measure_sequential(endpoint: Endpoint, prompts: list[str], max_tokens: int, repeats: int, warmup: int,
                       extra: dict | None = None) -> tuple[dict, list[RequestResult]]:
    """Concurrency 1: (summary, every timed request)."""
    for _ in range(warmup):
        for prompt in prompts:
            endpoint.stream(prompt, max_tokens, extra=extra)
    started = time.perf_counter()
    results = [endpoint.stream(prompt, max_tokens, extra=extra) for _ in range(repeats) for prompt in prompts]
    return {**summarize(results), "timed_wall_s": time.perf_counter() - started}, results


def measure_concurrent(make_endpoint, prompts: list[str], max_tokens: int, repeats: int, concurrency: int,
                       extra: dict | None = None) -> dict:
    """Concurrency N: every client sends the prompt set ``repeats`` times, back to back.
    ``make_endpoint()`` gives each client its own connection pool."""
    endpoints = [make_endpoint() for _ in range(concurrency)]

    def client(endpoint: Endpoint) -> list[RequestResult]:
        return [endpoint.stream(prompt, max_tokens, extra=extra) for _ in range(repeats) for prompt in prompts]

    pool = ThreadPoolExecutor(concurrency)
    try:
        started = time.perf_counter()
        results = [r for batch in pool.map(client, endpoints) for r in batch]
        wall = time.perf_counter() - started
    finally:
        for endpoint in endpoints:  # a failed or interrupted run: the other clients' next request fails fast
            endpoint.close()
        pool.shutdown(wait=True, cancel_futures=True)
    return aggregate(results, wall, concurrency)


def aggregate(results: list[RequestResult], wall: float, concurrency: int) -> dict:
    """The throughput summary of requests sent by ``concurrency`` clients over ``wall``
    seconds (module docstring). At concurrency 1 the sequential timed pass is such a run:
    the bench then reuses it instead of a second server."""
    answered = [r for r in results if r.text]
    output_tokens = sum(r.completion_tokens for r in results)
    prefill_s, decode_s = sum(r.ttft_s for r in answered), sum(r.decode_s for r in results if r.completion_tokens > 1)
    decoded = sum(r.completion_tokens - 1 for r in results if r.completion_tokens > 1)
    return {
        "concurrency": concurrency, "requests": len(results), "wall_s": wall, "output_tokens": output_tokens,
        "output_tokens_per_s": output_tokens / wall, "requests_per_s": len(results) / wall,
        "prefill_tokens_per_s": concurrency * sum(r.prompt_tokens for r in answered) / prefill_s if prefill_s else None,
        "decode_tokens_per_s": concurrency * decoded / decode_s if decode_s > 0 else None,
        "ttft_p50_s": percentile([r.ttft_s for r in answered], 50), "ttft_p95_s": percentile([r.ttft_s for r in answered], 95),
        "ttft_p99_s": percentile([r.ttft_s for r in answered], 99),
        "e2e_p50_s": percentile([r.e2e_s for r in results], 50), "e2e_p95_s": percentile([r.e2e_s for r in results], 95),
        "e2e_p99_s": percentile([r.e2e_s for r in results], 99),
    }
