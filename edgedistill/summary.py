"""The tables `edgedistill build` and `edgedistill bench` print: teacher vs student quality
from the manifest's metrics, and the bench's teacher-API-vs-artifacts comparison."""

from __future__ import annotations

from rich.table import Table


def quality_table(metrics: dict) -> Table:
    """Teacher vs student: parameters, held-out perplexity and top-1, QA, retention.

    Test-split numbers when the recipe names ``bench.eval_path``, else the distillation
    data's held-out windows (labelled as such)."""
    split = "test" if "student_test_ppl" in metrics else "val"
    label = {"test": "test split", "val": "held-out windows of the training data"}[split]
    table = Table("model", "params", f"ppl ({label})", "top-1", "QA top-1", "QA ppl", title="quality")

    def cell(key: str, fmt: str) -> str:
        return format(metrics[key], fmt) if isinstance(metrics.get(key), (int, float)) else "-"

    for role in ("teacher", "student"):
        table.add_row(role, cell(f"{role}_params", ","), cell(f"{role}_{split}_ppl", ".2f"), cell(f"{role}_{split}_top1", ".4f"),
                      cell(f"{role}_qa_top1", ".4f"), cell(f"{role}_qa_ppl", ".2f"))
    teacher_params, student_params = metrics.get("teacher_params"), metrics.get("student_params")
    size = f"{student_params / teacher_params:.2f}x" if teacher_params and student_params else "-"
    if split == "test":
        retention = metrics.get("retention_top1")
    else:
        teacher_top1 = metrics.get("teacher_val_top1") or 0
        retention = metrics["student_val_top1"] / teacher_top1 if teacher_top1 > 0 else None
    table.add_row("student / teacher", size, "", f"{retention:.1%}" if retention is not None else "-",
                  f"{metrics['retention_qa_top1']:.1%}" if "retention_qa_top1" in metrics else "-", "")
    pair = "student_teacher" if split == "test" else "student_teacher_val"
    table.caption = (f"student-teacher top-1 agreement {cell(pair + '_top1_agreement', '.4f')}, "
                     f"KL(teacher || student) {cell(pair + '_kl', '.4f')} nats/token")
    return table


def bench_table(results: dict) -> Table:
    """Teacher API vs every artifact: what it costs to run and what it keeps."""
    table = Table(title=f"bench: teacher behind an API vs students ({results['traffic']['requests_per_day']:,.0f} requests/day)")
    table.add_column("model", no_wrap=True)
    for header in ("MB", "RSS MB", "TTFT ms p50/p95", "TPOT ms", "decode tok/s",
                   f"x{results['settings']['concurrency']} tok/s", "ppl", "top-1 kept", "$/1M tok", "$/month", "warn"):
        table.add_column(header, justify="right", no_wrap=header.startswith("TTFT"))

    def num(value, fmt: str, scale: float = 1.0) -> str:
        return format(value * scale, fmt) if isinstance(value, (int, float)) else "-"

    for entry in (results["teacher"], *results["artifacts"]):
        concurrent = entry.get("concurrent") or {}
        table.add_row(
            entry["name"], num(entry["bytes"], ".1f", 1e-6), num(entry["peak_rss_bytes"], ".0f", 1e-6),
            f"{num(entry['ttft_p50_s'], '.1f', 1e3)}/{num(entry['ttft_p95_s'], '.1f', 1e3)}",
            num(entry["tpot_p50_s"], ".2f", 1e3), num(entry["decode_tokens_per_s"], ".0f"),
            num(concurrent.get("output_tokens_per_s"), ".0f"), num(entry["perplexity"], ".1f"), num(entry["retention"], ".1%"),
            num(entry["usd_per_1m_tokens"], ".3g"), num(entry["usd_per_month"], ",.0f"),
            "MISSING" if entry["missing"] else str(len(entry["warnings"]) or "-"),
        )
    return table
