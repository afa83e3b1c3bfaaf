"""The benchmark report: files written, PNGs valid, HTML self-contained and escaped, tables,
the Pareto front and build-to-build deltas on hand-computed cases."""

from __future__ import annotations

import base64
import copy
import re
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest

from edgedistill.benchmarks.compare import compare, render_compare
from edgedistill.benchmarks.report import make_plots, pareto_front, render_html, render_markdown, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOT_NAMES = {"quality_vs_size", "latency_vs_size", "cost_per_month", "pareto"}


def make_entry(name: str, **measured) -> dict:
    """An ENTRY with every schema key; ``measured`` overrides the nulls."""
    entry = dict.fromkeys([
        "quantization", "error", "bytes", "params", "load_s", "peak_rss_bytes", "ttft_p50_s", "ttft_p95_s",
        "ttft_p99_s", "tpot_p50_s", "tpot_p95_s", "e2e_p50_s", "e2e_p95_s", "e2e_p99_s", "decode_tokens_per_s",
        "prefill_tokens_per_s", "latency_requests", "concurrent", "perplexity", "top1_accuracy", "top1_agreement",
        "kl_to_teacher", "ece", "qa_top1", "retention", "retention_detail", "overdistill", "usd_per_1m_tokens",
        "usd_per_1m_input_tokens", "usd_per_1m_output_tokens", "usd_per_month", "instances_needed",
        "break_even_requests_per_day"])
    entry.update(name=name, role="student", format="onnx", served_by="edgedistill serve (onnx backend)",
                 missing=False, warnings=[])
    entry.update(measured)
    return entry


def measured_student(name: str, size_mb: float, retention: float, ttft_ms: float, usd_month: float, **extra) -> dict:
    return make_entry(
        name, bytes=int(size_mb * 1e6), params=int(size_mb * 2.5e5), load_s=0.8, peak_rss_bytes=int(size_mb * 3e6),
        ttft_p50_s=ttft_ms / 1000, ttft_p95_s=ttft_ms * 1.4 / 1000, tpot_p50_s=0.006, tpot_p95_s=0.009,
        e2e_p50_s=0.45, e2e_p95_s=0.6, decode_tokens_per_s=160.0, prefill_tokens_per_s=2400.0, latency_requests=24,
        concurrent={"concurrency": 2, "requests": 16, "wall_s": 3.2, "output_tokens": 1024,
                    "output_tokens_per_s": 320.0, "requests_per_s": 5.0},
        perplexity=54.0, top1_accuracy=0.296 * retention, top1_agreement=0.744, kl_to_teacher=0.172, ece=0.03,
        qa_top1=0.27, retention=retention, retention_detail={"top1": retention},
        overdistill={"answers": 48, "truncation_rate": 0.2, "mean_answer_tokens": 61.0, "length_ratio": 0.9,
                     "paraphrase_stability": 0.55, "repetition_rate": 0.05},
        usd_per_1m_tokens=0.12, usd_per_1m_input_tokens=0.01, usd_per_1m_output_tokens=0.2,
        usd_per_month=usd_month, instances_needed=1, break_even_requests_per_day=450.0, **extra)


def teacher_entry() -> dict:
    return make_entry(
        "teacher", role="teacher", format="api", served_by="http://127.0.0.1:8000/v1 (model pydocs-teacher)",
        load_s=None, ttft_p50_s=0.21, ttft_p95_s=0.35, tpot_p50_s=0.012, tpot_p95_s=0.02, e2e_p50_s=1.9,
        e2e_p95_s=2.4, decode_tokens_per_s=80.0, prefill_tokens_per_s=1500.0, perplexity=41.0, top1_accuracy=0.296,
        top1_agreement=1.0, kl_to_teacher=0.0, ece=0.02, qa_top1=0.29, retention=1.0, retention_detail={"top1": 1.0},
        overdistill={"answers": 48, "truncation_rate": 0.1, "mean_answer_tokens": 70.0, "length_ratio": 1.0,
                     "paraphrase_stability": 0.7, "repetition_rate": 0.01},
        usd_per_1m_tokens=4.55, usd_per_1m_input_tokens=2.5, usd_per_1m_output_tokens=10.0, usd_per_month=675.0)


def make_results() -> dict:
    """A teacher behind an API and three artifacts, one named to need HTML escaping."""
    return {
        "schema_version": 1, "created_utc": "2026-11-28T10:30:00Z",
        "build": {"dir": "edgedistill-out/docs-assistant", "recipe": "docs-assistant",
                  "teacher": "builtin:pydocs-teacher"},
        "machine": {"cpu": "Xeon <Model> & Co", "cpu_count": 2, "platform": "Linux-6.1-x86_64", "python": "3.11.7",
                    "packages": {"onnxruntime": "1.32.0", "torch": "not installed"}},
        "settings": {"latency_max_tokens": 64, "answer_max_tokens": 96, "latency_prompts": 8,
                     "prompt_tokens_mean": 143.5, "prompt_tokens_min": 12, "prompt_tokens_max": 290, "repeats": 3,
                     "warmup": 1, "concurrency": 2, "threads": 2, "eval_windows": 16},
        "traffic": {"requests_per_day": 10000, "input_tokens_per_request": 400, "output_tokens_per_request": 150,
                    "utilization": 0.5},
        "prices": {"file": "/path/prices.yaml", "as_of": "2026-11-28",
                   "assumption": "list prices assumed on 2026-11-28; edit the file for your vendor",
                   "api": {"name": "frontier-api-mid", "usd_per_1m_input_tokens": 2.5,
                           "usd_per_1m_output_tokens": 10.0},
                   "hardware": {"name": "cloud-2vcpu", "usd_per_hour": 0.085}},
        "thresholds": {"truncation_rate_increase": 0.1, "length_ratio_min": 0.6, "paraphrase_stability_drop": 0.15,
                       "ece_increase": 0.05, "repetition_rate_increase": 0.1, "retention_min": 0.9},
        "teacher": teacher_entry(),
        "artifacts": [
            measured_student("onnx-fp32", 23.6, 0.99, 40.0, 62.05),
            measured_student("onnx-int8", 6.1, 0.97, 25.0, 62.05),
            measured_student("gguf-q4<k>&m", 8.0, 0.95, 30.0, 62.05, format="gguf",
                             warnings=["truncation rate 0.35 vs teacher 0.10 (+0.25 > 0.10): <cut>"]),
        ],
        "warnings": ["retention below 90% for nothing & nobody"],
    }


def results_with_missing_teacher_and_nulls() -> dict:
    """The teacher API was down; one artifact measured nothing at all."""
    results = make_results()
    teacher = make_entry("teacher", role="teacher", format="api", missing=True,
                         error="connection refused <http://127.0.0.1:9/v1>", perplexity=41.0, top1_accuracy=0.296,
                         top1_agreement=1.0, kl_to_teacher=0.0, ece=0.02, qa_top1=0.29, retention=1.0, retention_detail={"top1": 1.0})
    results["teacher"] = teacher
    results["artifacts"].append(make_entry("gguf-broken", format="gguf"))
    results["warnings"] = ["teacher API http://127.0.0.1:9/v1 unreachable: connection refused; teacher rows missing"]
    return results


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which the PNG spec requires to come first."""
    assert data[:8] == PNG_SIGNATURE
    length, chunk_type = struct.unpack(">I4s", data[8:16])
    assert chunk_type == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def png_pixel_bytes(data: bytes) -> bytes:
    """The concatenated IDAT chunks, inflated: filtered scanlines, one filter byte per row."""
    position, compressed = 8, b""
    while position < len(data):
        length, chunk_type = struct.unpack(">I4s", data[position:position + 8])
        if chunk_type == b"IDAT":
            compressed += data[position + 8:position + 8 + length]
        position += 12 + length  # length, type, payload, CRC
    return zlib.decompress(compressed)


def test_write_report_writes_plots_markdown_and_html(tmp_path):
    written = write_report(make_results(), tmp_path)

    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == sorted(
        [f"plots/{name}.png" for name in PLOT_NAMES] + ["report.md", "report.html"])
    assert all(p.is_file() and p.stat().st_size > 0 for p in written)
    for name in PLOT_NAMES:
        width, height = png_size((tmp_path / "plots" / f"{name}.png").read_bytes())
        assert 600 <= width <= 1400 and 300 <= height <= 900, (name, width, height)


def test_make_plots_skips_charts_without_numbers_and_leaves_no_open_figures(tmp_path):
    import matplotlib.pyplot as plt

    results = make_results()
    results["teacher"] = make_entry("teacher", role="teacher", missing=True, error="down")
    results["artifacts"] = [make_entry("a"), make_entry("b")]
    open_before = plt.get_fignums()

    assert make_plots(results, tmp_path) == {}
    assert list(tmp_path.iterdir()) == []
    assert plt.get_fignums() == open_before


def test_html_is_self_contained_with_embedded_pngs(tmp_path):
    write_report(make_results(), tmp_path)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")

    assert '<meta charset="utf-8">' in page
    for external in ('src="http', 'href="http', "<script src", "<link", "url(http", "@import"):
        assert external not in page, external
    images = re.findall(r"<img\b[^>]*>", page)
    assert len(images) == len(PLOT_NAMES)
    for image in images:
        source = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', image)
        assert source, image[:80]
        assert base64.b64decode(source.group(1)).startswith(PNG_SIGNATURE)


def test_html_escapes_every_string_from_results():
    page = render_html(make_results(), None)

    assert "gguf-q4&lt;k&gt;&amp;m" in page and "gguf-q4<k>" not in page
    assert "Xeon &lt;Model&gt; &amp; Co" in page
    assert "&lt;cut&gt;" in page and "<cut>" not in page
    assert "nothing &amp; nobody" in page
    assert 'class="warn"' in page  # warnings are highlighted, not plain text


def test_markdown_has_every_table_the_warnings_and_the_plot_links(tmp_path):
    plots = make_plots(make_results(), tmp_path / "plots")

    text = render_markdown(make_results(), plots)

    for heading in ("## Latency", "## Quality", "## Over-distillation", "## Cost", "## Warnings",
                    "## Prices (assumptions, as of 2026-11-28)"):
        assert heading in text, heading
    for header in ("| entry | TTFT p50 (ms) | TTFT p95 (ms) | TTFT p99 (ms) | TPOT p50 (ms)", "output tok/s at concurrency 2",
                   "| entry | perplexity | top-1 | top-1 agreement", "| entry | truncation rate |",
                   "| entry | $/1M tokens (blended) |", "break-even vs API (requests/day)"):
        assert header in text, header
    assert "| onnx-int8 ★ | 25.0 | 35.0 | - | 6.00 | 9.00 | - | 450 | 600 | - | 160 | 2,400 | 320 | 0.80 | 18.3 | 6.10 |" in text
    assert "| teacher | 41.0 | 29.6% | 100.0% | 0.000 | 0.020 | 29.0% | 100.0% |" in text
    assert "| teacher | $4.55 | $2.50 | $10.00 | $675.00 | - | - |" in text
    assert "- **gguf-q4\\<k>&m**:\n  - truncation rate 0.35 vs teacher 0.10 (+0.25 > 0.10): \\<cut>" in text
    assert "- **onnx-fp32**: none" in text
    assert "- **report**:\n  - retention below 90% for nothing & nobody" in text
    assert "Xeon \\<Model> & Co, 2 cores, Python 3.11.7" in text and "onnxruntime 1.32.0" in text
    assert "3 repeats after 1 warm-up, 2 threads, concurrency 2; quality over 16 held-out windows" in text
    assert "torch" not in text.split("## Prices")[0]  # "not installed" packages are left out
    for name in PLOT_NAMES:
        assert f"(plots/{name}.png)" in text


def test_missing_teacher_reads_missing_with_its_error_and_nulls_read_dash(tmp_path):
    results = results_with_missing_teacher_and_nulls()
    results["settings"]["probe_questions"] = 12  # a key the schema does not name yet
    del results["settings"]["eval_windows"]

    written = write_report(results, tmp_path)
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    page = (tmp_path / "report.html").read_text(encoding="utf-8")

    assert len(written) == 6  # the broken artifact has no numbers; the others still chart
    latency = text.split("## Latency")[1].split("## Quality")[0]
    assert "| teacher | " + " | ".join(["missing"] * 12) + " |" in latency
    assert "> teacher missing: connection refused \\<http://127.0.0.1:9/v1>" in latency
    assert "| gguf-broken | " + " | ".join(["-"] * 12) + " |" in latency
    quality = text.split("## Quality")[1].split("## Over-distillation")[0]
    assert "| teacher | 41.0 | 29.6% |" in quality and "teacher missing" not in quality
    assert "teacher missing: connection refused &lt;http://127.0.0.1:9/v1&gt;" in page
    assert "teacher API http://127.0.0.1:9/v1 unreachable" in text
    assert "quality over - held-out windows" in text and "tokens; also probe_questions 12" in text


def test_pareto_front_on_a_hand_computed_case():
    entries = [
        {"name": "big-best", "bytes": 100, "retention": 0.99},
        {"name": "mid", "bytes": 50, "retention": 0.95},
        {"name": "mid-worse", "bytes": 60, "retention": 0.94},   # mid is smaller and better
        {"name": "small", "bytes": 10, "retention": 0.80},
        {"name": "small-tie", "bytes": 10, "retention": 0.80},   # an exact tie: neither dominates
        {"name": "same-size-worse", "bytes": 50, "retention": 0.90},  # mid: as small, strictly better
        {"name": "unmeasured", "bytes": None, "retention": 1.0},
        {"name": "no-quality", "bytes": 1, "retention": None},
    ]

    assert pareto_front(entries) == ["big-best", "mid", "small", "small-tie"]
    assert pareto_front(entries, x="usd", y="retention") == []  # no entry has the key: nothing to rank
    assert pareto_front([]) == []


def test_compare_gives_deltas_matched_by_name_with_added_removed_and_nulls():
    old = make_results()
    new = copy.deepcopy(old)
    new["artifacts"][0]["bytes"] = 25_000_000        # onnx-fp32: 23.6 MB -> 25 MB
    new["artifacts"][0]["ttft_p50_s"] = None          # measured before, not now
    new["artifacts"][1]["usd_per_month"] = 0.0        # onnx-int8: $62.05 -> $0
    old["artifacts"][1]["retention"] = 0.0            # zero old value: no relative change
    new["artifacts"][2]["name"] = "gguf-q5"           # renamed: one removed, one added

    rows = compare(new, old)
    by_key = {(r["name"], r["metric"]): r for r in rows}

    assert [r["name"] for r in rows[::12]] == ["teacher", "onnx-fp32", "onnx-int8", "gguf-q5", "gguf-q4<k>&m"]
    assert {r["status"] for r in rows if r["name"] == "gguf-q5"} == {"added"}
    assert {r["status"] for r in rows if r["name"] == "gguf-q4<k>&m"} == {"removed"}
    size = by_key["onnx-fp32", "bytes"]
    assert (size["old"], size["new"], size["delta"]) == (23_600_000, 25_000_000, 1_400_000)
    assert size["delta_pct"] == pytest.approx(100 * 1.4 / 23.6)
    assert by_key["onnx-fp32", "ttft_p50_s"] == {"name": "onnx-fp32", "status": "both", "metric": "ttft_p50_s",
                                                  "old": 0.04, "new": None, "delta": None, "delta_pct": None}
    assert by_key["onnx-int8", "usd_per_month"]["delta"] == pytest.approx(-62.05)
    assert by_key["onnx-int8", "usd_per_month"]["delta_pct"] == pytest.approx(-100.0)
    assert by_key["onnx-int8", "retention"]["delta"] == pytest.approx(0.97)
    assert by_key["onnx-int8", "retention"]["delta_pct"] is None
    assert by_key["onnx-fp32", "truncation_rate"]["delta"] == 0.0
    assert by_key["gguf-q5", "retention"]["old"] is None and by_key["gguf-q5", "retention"]["new"] == 0.95
    assert by_key["teacher", "bytes"]["delta"] is None

    table = render_compare(rows, "build-2", "build-1")

    assert "| entry | metric | build-1 | build-2 | change | change % |" in table
    assert "| onnx-fp32 | size (MB) | 23.6 | 25.0 | +1.40 | +5.9% |" in table
    assert "| onnx-fp32 | TTFT p50 (ms) | 40.0 | - | - | - |" in table
    assert "| onnx-int8 | $/month | $62.05 | $0.00 | -$62.05 | -100.0% |" in table
    assert "| onnx-int8 | retention | 0.0% | 97.0% | +97.0 pp | - |" in table
    assert "| gguf-q5 (added) | retention | - | 95.0% | - | - |" in table
    assert "| gguf-q4\\<k>&m (removed) | retention | 95.0% | - | - | - |" in table


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed: cannot screenshot report.html")
def test_report_html_renders_in_headless_chromium(tmp_path):
    write_report(make_results(), tmp_path / "bench")
    screenshot = tmp_path / "screenshot.png"
    command = [shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400", f"--screenshot={screenshot}",
               (tmp_path / "bench" / "report.html").as_uri()]

    finished = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    assert screenshot.is_file(), f"chromium exited {finished.returncode}: {finished.stderr[-2000:]}"
    data = screenshot.read_bytes()
    assert png_size(data) == (1280, 2400)
    # A flat page deflates to ~12 KB at this size; text, tables and four charts do not.
    assert len(data) > 50_000
    distinct_bytes = np.unique(np.frombuffer(png_pixel_bytes(data), dtype=np.uint8)).size
    assert distinct_bytes > 64
