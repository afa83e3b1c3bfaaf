"""Decode and prefill speed of one artifact through ``edgedistill.runtime``.

Greedy generation of exactly ``decode_tokens`` tokens (EOS ignored) from a fixed prompt,
after ``warmup`` untimed runs; the median over ``repeats`` runs is reported.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

BENCH_PROMPT = "The pathlib module offers classes representing filesystem paths with semantics appropriate for"
BENCH_PROMPT_TOKENS_MAX = len(BENCH_PROMPT.encode("utf-8")) + 1  # byte-level BPE: at most a token per byte (+ BOS)


def measure_decode(path: Path, decode_tokens: int, repeats: int, warmup: int, threads: int | None = None) -> dict:
    from edgedistill.runtime import load

    started = time.perf_counter()
    model = load(path, threads=threads)
    load_s = time.perf_counter() - started
    for _ in range(warmup):
        model.generate(BENCH_PROMPT, max_tokens=decode_tokens, ignore_eos=True)
    runs = [model.generate(BENCH_PROMPT, max_tokens=decode_tokens, ignore_eos=True).timings for _ in range(repeats)]
    return {
        "load_s": load_s,
        "prompt_tokens": runs[0].prompt_tokens,
        "decode_tokens": decode_tokens,
        "ttft_s": statistics.median(t.ttft_s for t in runs),
        "per_token_s": statistics.median(t.per_token_s for t in runs),
        "decode_tokens_per_s": statistics.median(t.decode_tokens_per_s for t in runs),
        "prefill_tokens_per_s": statistics.median(t.prefill_tokens_per_s for t in runs),
        "repeats": repeats,
    }
