"""Deltas between the bench results of two builds (``edgedistill bench DIR --compare OTHER``):
entries matched by name, the key metrics side by side with their change."""

from __future__ import annotations

from typing import Callable

from edgedistill.benchmarks.formatting import NULL, lookup, mb, ms, percent, points, significant, two_decimals, usd
from edgedistill.benchmarks.report import entries, md_cell

# (metric key, path in an entry, label with unit, value format, delta format)
COMPARE_METRICS = [
    ("bytes", ("bytes",), "size (MB)", mb, mb),
    ("peak_rss_bytes", ("peak_rss_bytes",), "peak RSS (MB)", mb, mb),
    ("ttft_p50_s", ("ttft_p50_s",), "TTFT p50 (ms)", ms, ms),
    ("tpot_p50_s", ("tpot_p50_s",), "TPOT p50 (ms)", ms, ms),
    ("decode_tokens_per_s", ("decode_tokens_per_s",), "decode tok/s", significant, significant),
    ("perplexity", ("perplexity",), "perplexity", significant, significant),
    ("top1_agreement", ("top1_agreement",), "top-1 agreement", percent, points),
    ("retention", ("retention",), "retention", percent, points),
    ("usd_per_1m_tokens", ("usd_per_1m_tokens",), "$/1M tokens", usd, usd),
    ("usd_per_month", ("usd_per_month",), "$/month", usd, usd),
    ("truncation_rate", ("overdistill", "truncation_rate"), "truncation rate", percent, points),
    ("paraphrase_stability", ("overdistill", "paraphrase_stability"), "paraphrase stability",
     two_decimals, two_decimals),
]
COMPARE_FORMATS = {key: (label, value_format, delta_format) for key, _, label, value_format, delta_format
                   in COMPARE_METRICS}


def compare(new: dict, old: dict) -> list[dict]:
    """One row per (entry, metric): name, status ("both" | "added" | "removed"), metric, old, new,
    delta (new - old) and delta_pct (100 * delta / |old|); None wherever a side is None (or old is 0
    for delta_pct). Entries match by name: new's order first, then entries only in ``old``."""
    new_entries, old_entries = {e["name"]: e for e in entries(new)}, {e["name"]: e for e in entries(old)}
    names = list(new_entries) + [name for name in old_entries if name not in new_entries]
    rows = []
    for name in names:
        status = "both" if name in new_entries and name in old_entries else "added" if name in new_entries \
            else "removed"
        for metric, path, *_ in COMPARE_METRICS:
            old_value, new_value = (_number(lookup(side.get(name), path)) for side in (old_entries, new_entries))
            delta = None if old_value is None or new_value is None else new_value - old_value
            delta_pct = None if delta is None or old_value == 0 else 100 * delta / abs(old_value)
            rows.append({"name": name, "status": status, "metric": metric, "old": old_value, "new": new_value,
                         "delta": delta, "delta_pct": delta_pct})
    return rows


def _number(value) -> float | None:
    """A metric as a number; anything else (a hand-edited or foreign file) compares as missing."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _signed(delta: float, delta_format: Callable[[float], str]) -> str:
    return ("+" if delta > 0 else "-" if delta < 0 else "±") + delta_format(abs(delta))


def render_compare(rows: list[dict], new_label: str, old_label: str) -> str:
    """A markdown table of ``compare``'s rows; "-" where a value or a delta is None."""
    lines = [f"## Benchmark comparison: {md_cell(new_label)} vs {md_cell(old_label)}", "",
             f"| entry | metric | {md_cell(old_label)} | {md_cell(new_label)} | change | change % |",
             "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        label, value_format, delta_format = COMPARE_FORMATS[row["metric"]]
        entry = row["name"] + ("" if row["status"] == "both" else f" ({row['status']})")
        old_text, new_text = (NULL if v is None else value_format(v) for v in (row["old"], row["new"]))
        delta = NULL if row["delta"] is None else _signed(row["delta"], delta_format)
        delta_pct = NULL if row["delta_pct"] is None else f"{row['delta_pct']:+.1f}%"
        lines.append(f"| {md_cell(entry)} | {label} | {old_text} | {new_text} | {delta} | {delta_pct} |")
    return "\n".join(lines) + "\n"
