"""The benchmark report: ``report.md`` and a self-contained ``report.html`` from ``results``.

``results`` is the bench stage's dict (schema: docs/bench.md, "bench results.json"); every number may be None
and prints as "-". Both renderers draw from one list of ``Table``s built by ``report_tables``,
so the markdown and the HTML page cannot disagree. ``compare.py`` diffs the results of two builds.
"""

from __future__ import annotations

import base64
import html
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

from edgedistill.benchmarks.formatting import (
    NULL, lookup, mb, ms, percent, plain, significant, three_decimals, two_decimals, usd, whole)
from edgedistill.benchmarks.plots import CAPTIONS, make_plots, pareto_front

MISSING, PARETO_MARK = "missing", " ★"


# ---- tables


class Column(NamedTuple):
    header: str
    path: tuple[str, ...]
    format: Callable[[float], str]


@dataclass(frozen=True)
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)  # shown beneath the table
    text_columns: int = 1  # leading columns of words, left-aligned; the rest are numbers, right-aligned


def latency_columns(concurrency) -> list[Column]:
    return [
        Column("TTFT p50 (ms)", ("ttft_p50_s",), ms), Column("TTFT p95 (ms)", ("ttft_p95_s",), ms),
        Column("TTFT p99 (ms)", ("ttft_p99_s",), ms),
        Column("TPOT p50 (ms)", ("tpot_p50_s",), ms), Column("TPOT p95 (ms)", ("tpot_p95_s",), ms),
        Column("TPOT p99 (ms)", ("tpot_p99_s",), ms),
        Column("e2e p50 (ms)", ("e2e_p50_s",), ms), Column("e2e p95 (ms)", ("e2e_p95_s",), ms),
        Column("e2e p99 (ms)", ("e2e_p99_s",), ms),
        Column("decode tok/s", ("decode_tokens_per_s",), significant),
        Column("prefill tok/s", ("prefill_tokens_per_s",), significant),
        Column(f"output tok/s at concurrency {plain(concurrency)}", ("concurrent", "output_tokens_per_s"),
               significant),
        Column("load (s)", ("load_s",), two_decimals),
        Column("peak RSS (MB)", ("peak_rss_bytes",), mb), Column("size (MB)", ("bytes",), mb),
    ]


QUALITY_COLUMNS = [
    Column("perplexity", ("perplexity",), significant), Column("top-1", ("top1_accuracy",), percent),
    Column("top-1 agreement", ("top1_agreement",), percent),
    Column("KL to teacher (nats/token)", ("kl_to_teacher",), three_decimals), Column("ECE", ("ece",), three_decimals),
    Column("QA top-1", ("qa_top1",), percent), Column("top-1 retention", ("retention_detail", "top1"), percent),
]


def interval(bounds) -> str:
    return f"{bounds[0]:.0%} to {bounds[1]:.0%}"


ANSWER_COLUMNS = [
    Column("ROUGE-L", ("answer_quality", "rouge_l"), three_decimals),
    Column("test pages", ("answer_quality", "by_set", "test-pages", "rouge_l"), three_decimals),
    Column("independent", ("answer_quality", "by_set", "independent", "rouge_l"), three_decimals),
    Column("ROUGE-L vs teacher's answer", ("answer_quality", "rouge_l_vs_teacher"), three_decimals),
    Column("answer retention", ("answer_quality", "retention"), percent),
    Column("95% interval", ("answer_quality", "retention_ci95"), interval),
    Column("size (MB)", ("bytes",), mb), Column("decode tok/s", ("decode_tokens_per_s",), significant),
]


def answer_table(results: dict) -> Table:
    from edgedistill.benchmarks.recommend import family

    settings = results.get("settings") or {}
    sets = ", ".join(f"{count} {name}" for name, count in (settings.get("answer_questions") or {}).items())
    table = metric_table("Answers (held-out questions, chat, greedy)", ANSWER_COLUMNS, results)
    notes = [f"questions: {sets or NULL}; ROUGE-L F1 (rouge-score, stemmed) of each answer to its question's reference; "
             "answer retention = student mean / teacher mean, 95% paired bootstrap interval over questions"]
    kinds = ["teacher" if e.get("role") == "teacher" else family(e) for e in entries(results)]
    rows = [[row[0], kind, *row[1:]] for row, kind in zip(table.rows, kinds)]
    return Table(table.title, [table.headers[0], "what", *table.headers[1:]], rows, notes + table.notes, text_columns=2)
OVERDISTILL_COLUMNS = [
    Column("truncation rate", ("overdistill", "truncation_rate"), percent),
    Column("mean answer tokens", ("overdistill", "mean_answer_tokens"), significant),
    Column("length ratio vs teacher", ("overdistill", "length_ratio"), two_decimals),
    Column("paraphrase stability", ("overdistill", "paraphrase_stability"), two_decimals),
    Column("repetition rate", ("overdistill", "repetition_rate"), percent),
]
COST_COLUMNS = [
    Column("$/1M tokens (blended)", ("usd_per_1m_tokens",), usd),
    Column("$/1M input", ("usd_per_1m_input_tokens",), usd),
    Column("$/1M output", ("usd_per_1m_output_tokens",), usd),
    Column("$/month", ("usd_per_month",), usd), Column("instances", ("instances_needed",), whole),
    Column("break-even vs API (requests/day)", ("break_even_requests_per_day",), whole),
    Column("break-even vs self-hosted teacher (requests/day)", ("break_even_vs_teacher_requests_per_day",), whole),
    Column("saved vs teacher ($/month)", ("usd_per_month_saved_vs_teacher",), usd),
]


def cost_table(results: dict) -> Table:
    """The cost rows as priced (a teacher that ran here is self-hosted), the API what-if beneath."""
    table = metric_table("Cost", COST_COLUMNS, results)
    teacher, notes = results.get("teacher") or {}, []
    if teacher.get("priced_as"):
        notes.append(f"teacher priced as {teacher['priced_as']}; students self-hosted on the same hardware row")
    what_if = teacher.get("api_what_if")
    if what_if:
        notes.append(f"what-if: the teacher's traffic at API '{what_if['api']}' prices (assumed {what_if['as_of']}, "
                     f"{what_if['source']}) would cost {usd(what_if['usd_per_month'])}/month, "
                     f"{usd(what_if['usd_per_1m_tokens'])} per 1M tokens blended")
    return Table(table.title, table.headers, table.rows, notes + table.notes)


def entries(results: dict) -> list[dict]:
    """The teacher (when the results have one) followed by the artifacts in export order."""
    return ([results["teacher"]] if results.get("teacher") else []) + list(results.get("artifacts") or [])


def metric_table(title: str, columns: list[Column], results: dict) -> Table:
    """One row per entry. A missing entry's unmeasured cells read "missing", its error goes beneath."""
    optimal = set(pareto_front(results.get("artifacts") or []))
    rows, notes = [], []
    for entry in entries(results):
        empty = MISSING if entry.get("missing") else NULL
        cells = [empty if (v := lookup(entry, c.path)) is None else c.format(v) for c in columns]
        label = entry["name"] + (PARETO_MARK if entry["name"] in optimal and entry.get("role") != "teacher" else "")
        rows.append([label] + cells)
        if entry.get("missing") and MISSING in cells:
            notes.append(f"{entry['name']} missing: {entry.get('error') or 'no error recorded'}")
    return Table(title, ["entry"] + [c.header for c in columns], rows, notes)


def price_table(results: dict) -> Table:
    prices = results.get("prices") or {}
    api, hardware = prices.get("api") or {}, prices.get("hardware") or {}
    api_price = (f"{_usd_or_null(api.get('usd_per_1m_input_tokens'))} per 1M input tokens, "
                 f"{_usd_or_null(api.get('usd_per_1m_output_tokens'))} per 1M output tokens")
    hardware_price = f"{_usd_or_null(hardware.get('usd_per_hour'))} per hour per instance"
    rows = [["teacher API", plain(api.get("name")), api_price],
            ["student hardware", plain(hardware.get("name")), hardware_price]]
    notes = [n for n in (prices.get("assumption"), prices.get("file") and f"prices file: {prices['file']}") if n]
    return Table(f"Prices (assumptions, as of {plain(prices.get('as_of'))})", ["item", "name", "price"], rows, notes,
                 text_columns=3)


def _usd_or_null(value) -> str:
    return NULL if value is None else usd(value)


def report_tables(results: dict) -> list[Table]:
    concurrency = (results.get("settings") or {}).get("concurrency")
    answers = [answer_table(results)] if any(e.get("answer_quality") for e in entries(results)) else []
    return [
        *answers,
        price_table(results),
        metric_table("Latency", latency_columns(concurrency), results),
        metric_table("Quality", QUALITY_COLUMNS, results),
        metric_table("Over-distillation", OVERDISTILL_COLUMNS, results),
        cost_table(results),
        *lm_eval_tables(results),
    ]


def lm_eval_tables(results: dict) -> list[Table]:
    """The lm-evaluation-harness table when the bench ran lm-eval tasks (``lm_eval_bench.py``)."""
    from edgedistill.benchmarks.lm_eval_bench import report_table

    fields = report_table(results.get("lm_eval"))
    return [Table(**fields)] if fields else []


SETTINGS_SENTENCE = (
    "latency over {latency_prompts} prompts (prompt tokens mean {prompt_tokens_mean}, range {prompt_tokens_min}-"
    "{prompt_tokens_max}), up to {latency_max_tokens} output tokens, {repeats} repeats after {warmup} warm-up, "
    "{threads} threads, concurrency {concurrency}; quality over {eval_windows} held-out windows; answers up to "
    "{answer_max_tokens} tokens")
SETTINGS_IN_SENTENCE = {name for _, name, _, _ in string.Formatter().parse(SETTINGS_SENTENCE) if name}


def _settings_text(settings: dict) -> str:
    """The schema's settings as a sentence; keys the schema does not name yet follow as "key value"."""
    known = {key: plain(settings.get(key)) for key in SETTINGS_IN_SENTENCE}
    extras = [f"{key} {plain(value)}" for key, value in settings.items() if key not in SETTINGS_IN_SENTENCE]
    return SETTINGS_SENTENCE.format(**known) + (f"; also {', '.join(extras)}" if extras else "")


def report_facts(results: dict) -> list[tuple[str, str]]:
    """(label, text) lines under the title: what was built, on what, measured how, for what traffic."""
    build, machine = results.get("build") or {}, results.get("machine") or {}
    settings, traffic = results.get("settings") or {}, results.get("traffic") or {}
    packages = ", ".join(f"{name} {version}" for name, version in (machine.get("packages") or {}).items()
                         if version != "not installed")
    utilization = traffic.get("utilization")
    return [
        ("Build", f"{plain(build.get('dir'))} (recipe {plain(build.get('recipe'))}, "
                  f"teacher {plain(build.get('teacher'))}), created {plain(results.get('created_utc'))}"),
        ("Machine", f"{plain(machine.get('cpu'))}, {plain(machine.get('cpu_count'))} cores, "
                    f"Python {plain(machine.get('python'))}, {plain(machine.get('platform'))}"),
        ("Packages", packages or NULL),
        ("Settings", _settings_text(settings)),
        ("Traffic", f"{plain(traffic.get('requests_per_day'))} requests/day, "
                    f"{plain(traffic.get('input_tokens_per_request'))} input + "
                    f"{plain(traffic.get('output_tokens_per_request'))} output tokens/request, utilization "
                    f"{NULL if utilization is None else f'{utilization:.0%}'}, 30-day month"),
        ("Legend", "-: not measured; ★: Pareto-optimal artifact (no other artifact is as small and as good "
                   "in retention: answer ROUGE-L where answers were scored, else top-1); sizes in MB = 10^6 bytes"),
    ]


def recommendation_lines(recommendation: dict) -> tuple[str, list[str]]:
    """The recommendation section: what to ship under the constraint, then the verdicts."""
    pick = recommendation.get("choice")
    first = f"ship {pick}: {recommendation['why']}" if pick else recommendation["why"]
    return "Recommendation", [first, *recommendation.get("verdict", [])]


def report_warnings(results: dict) -> list[tuple[str, list[str]]]:
    """("report", report-wide warnings) then (entry name, its warnings); an empty list reads "none"."""
    return [("report", list(results.get("warnings") or []))] + [
        (entry["name"], list(entry.get("warnings") or [])) for entry in entries(results)]


def _title(results: dict) -> str:
    return f"Benchmark report: {(results.get('build') or {}).get('recipe') or 'edgedistill build'}"


# ---- markdown


def md_cell(text: str) -> str:
    """Text from results kept literal: "|" would split a table cell and "<" open an HTML tag."""
    return text.replace("|", "\\|").replace("<", "\\<").replace("\n", " ")


def _md_table(table: Table) -> list[str]:
    lines = [f"## {table.title}", "",
             "| " + " | ".join(md_cell(h) for h in table.headers) + " |",
             "|" + "---|" * table.text_columns + "---:|" * (len(table.headers) - table.text_columns)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in table.rows]
    lines.append("")
    for note in table.notes:
        lines += [f"> {md_cell(note)}", ""]
    return lines


def render_markdown(results: dict, plot_files: dict[str, Path] | None) -> str:
    lines = [f"# {_title(results)}", ""]
    lines += [f"- **{label}**: {md_cell(text)}" for label, text in report_facts(results)] + [""]
    for table in report_tables(results):
        lines += _md_table(table)
    if results.get("recommendation"):
        title, lines_of = recommendation_lines(results["recommendation"])
        lines += [f"## {title}", ""] + [f"- {md_cell(line)}" for line in lines_of] + [""]
    lines += ["## Warnings", ""]
    for label, warnings in report_warnings(results):
        lines.append(f"- **{md_cell(label)}**:" + ("" if warnings else " none"))
        lines += [f"  - {md_cell(warning)}" for warning in warnings]
    if plot_files:
        lines += ["", "## Plots", ""]
        for name, path in plot_files.items():
            lines += [f"![{name}](plots/{path.name})", "", f"*{CAPTIONS.get(name, name)}*", ""]
    return "\n".join(lines).rstrip() + "\n"


# ---- HTML: one file, nothing fetched; every string from results is escaped

CSS = """body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#1d1d1f}h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}th,td{border:1px solid #d0d0d0;padding:4px 8px}
th{background:#f3f4f6}td{text-align:right}td.text{text-align:left}td:first-child{font-weight:600;white-space:nowrap}
.note{color:#555;font-size:13px;margin:.2em 0}.warn{background:#fff4ce;border-left:4px solid #e0a800;padding:.4em .8em;
margin:.3em 0}.ok{color:#2e7d32}figure{margin:1em 0}img{max-width:100%}figcaption{color:#555;font-size:13px}"""


def _html_table(table: Table) -> list[str]:
    esc = html.escape
    parts = [f"<h2>{esc(table.title)}</h2>", "<table>",
             "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in table.headers) + "</tr>"]
    for row in table.rows:
        cells = [f'<td class="text">{esc(c)}</td>' for c in row[:table.text_columns]]
        cells += [f"<td>{esc(c)}</td>" for c in row[table.text_columns:]]
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    parts += [f'<p class="note">{esc(note)}</p>' for note in table.notes]
    return parts


def _html_warnings(results: dict) -> list[str]:
    parts = ["<h2>Warnings</h2>"]
    for label, warnings in report_warnings(results):
        if not warnings:
            parts.append(f'<p><b>{html.escape(label)}</b>: <span class="ok">none</span></p>')
            continue
        parts.append(f"<p><b>{html.escape(label)}</b>:</p>")
        parts += [f'<div class="warn">⚠ {html.escape(warning)}</div>' for warning in warnings]
    return parts


def _html_figure(name: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = html.escape(CAPTIONS.get(name, name))
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
            f"<figcaption>{caption}</figcaption></figure>")


def render_html(results: dict, plot_files: dict[str, Path] | None) -> str:
    title = html.escape(_title(results))
    parts = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{title}</title><style>{CSS}</style></head><body>", f"<h1>{title}</h1>", "<ul>"]
    parts += [f"<li><b>{html.escape(label)}</b>: {html.escape(text)}</li>" for label, text in report_facts(results)]
    parts.append("</ul>")
    for table in report_tables(results):
        parts += _html_table(table)
    if results.get("recommendation"):
        title, lines_of = recommendation_lines(results["recommendation"])
        parts += [f"<h2>{html.escape(title)}</h2>", "<ul>"] + [f"<li>{html.escape(line)}</li>" for line in lines_of] + ["</ul>"]
    parts += _html_warnings(results)
    if plot_files:
        parts += ["<h2>Plots</h2>"] + [_html_figure(name, path) for name, path in plot_files.items()]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(results: dict, bench_dir: Path) -> list[Path]:
    """Write ``plots/*.png``, ``report.md`` and ``report.html`` under ``bench_dir``; returns their paths."""
    bench_dir.mkdir(parents=True, exist_ok=True)
    plot_files = make_plots(results, bench_dir / "plots")
    markdown_path, html_path = bench_dir / "report.md", bench_dir / "report.html"
    markdown_path.write_text(render_markdown(results, plot_files), encoding="utf-8")
    html_path.write_text(render_html(results, plot_files), encoding="utf-8")
    return list(plot_files.values()) + [markdown_path, html_path]
