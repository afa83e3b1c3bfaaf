"""The benchmark report's charts: quality, latency and cost against size on disk.

Input is the bench stage's ``results`` dict (schema: docs/bench.md, "bench results.json"). Any number may be
None; a chart whose numbers are all None is left out rather than drawn empty. matplotlib is
imported inside the functions so that ``pareto_front`` (used by the tables too) works where
only the runtime extras are installed.
"""

from __future__ import annotations

from pathlib import Path

DPI = 110
FIGSIZE_INCHES = (8.0, 5.0)  # 880 x 550 px at DPI: readable in a report column, small as a PNG
STYLE = {"font.size": 11, "axes.titlesize": 13, "axes.labelsize": 11, "legend.fontsize": 10,
         "axes.grid": True, "grid.alpha": 0.3}
STUDENT_COLOR, TEACHER_COLOR, PARETO_COLOR, DIM_COLOR = "#1f77b4", "#d62728", "#2ca02c", "#9aa0a6"
LOG_X_SPAN = 100.0  # cost bars: a linear axis hides the cheap bars once the range spans more than this
LOG_Y_SPAN = 20.0  # latency: TTFT is often tens of times TPOT; past this a linear axis flattens TPOT


def pareto_front(entries: list[dict], x: str = "bytes", y: str = "retention") -> list[str]:
    """Names of the entries no other entry dominates, minimizing ``x`` and maximizing ``y``.

    B dominates A when B[x] <= A[x] and B[y] >= A[y] with at least one strict. Entries whose
    x or y is None are ignored; exact ties are all kept. Names come back in input order.
    """
    points = [e for e in entries if e.get(x) is not None and e.get(y) is not None]

    def dominated(a: dict) -> bool:
        return any(b[x] <= a[x] and b[y] >= a[y] and (b[x] < a[x] or b[y] > a[y]) for b in points)

    return [e["name"] for e in points if not dominated(e)]


def make_plots(results: dict, plots_dir: Path) -> dict[str, Path]:
    """Draw every chart that has data into ``plots_dir``; returns chart name -> PNG path."""
    import matplotlib

    matplotlib.use("Agg")  # no display on build machines and CI; set before anything draws
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    with matplotlib.rc_context(STYLE):
        for name, draw in CHARTS.items():
            figure = draw(results)
            if figure is None:
                continue
            path = plots_dir / f"{name}.png"
            figure.savefig(path, dpi=DPI, bbox_inches="tight")
            written[name] = path
    return written


def _new_figure():
    """A Figure outside pyplot's registry: nothing to close, nothing leaks between charts."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGSIZE_INCHES)
    return figure, figure.subplots()


def _teacher(results: dict) -> dict:
    return results.get("teacher") or {}


def _with(entries: list[dict], *keys: str) -> list[dict]:
    return [e for e in entries if all(e.get(k) is not None for k in keys)]


def _format_megabytes(value: float, _position=None) -> str:
    return f"{value / 1e6:g} MB"


def _log_bytes_axis(axis, byte_counts: list[float]) -> None:
    """Log x in bytes, labelled in MB at 1-2-5 steps so a narrow range still gets ticks."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_xscale("log")
    axis.set_xlim(min(byte_counts) / 1.6, max(byte_counts) * 1.6)
    axis.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.xaxis.set_major_formatter(FuncFormatter(_format_megabytes))
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.set_xlabel("size on disk (MB, log scale)")


def _label_points(axis, entries: list[dict], x_key: str, y_of) -> None:
    """Name each point; neighbours along x take turns above and below, so artifacts of
    similar size (q4_0 next to q4_k_m) do not print over each other."""
    for index, entry in enumerate(sorted(entries, key=lambda e: e[x_key])):
        axis.annotate(entry["name"], (entry[x_key], y_of(entry)), textcoords="offset points",
                      xytext=(6, 6) if index % 2 == 0 else (6, -14), fontsize=9)


def _retention_axis(axis, results: dict, retentions: list[float]) -> None:
    """y in %, from below the threshold (dashed) up to the teacher's 100% so the gap reads true."""
    threshold = (results.get("thresholds") or {}).get("retention_min")
    lowest = min(retentions + ([threshold] if threshold is not None else []))
    if threshold is not None:
        axis.axhline(threshold * 100, color=TEACHER_COLOR, linestyle="--", linewidth=1,
                     label=f"retention threshold ({threshold:.0%})")
    axis.set_ylim(lowest * 100 - 2, max(retentions + [1.0]) * 100 + 1.5)
    answers = any(e.get("retention_of") == "answers_rouge_l" for e in results.get("artifacts") or [])
    axis.set_ylabel(f"{'answer ROUGE-L' if answers else 'top-1'} retention vs teacher (%)")


def quality_vs_size(results: dict):
    students = _with(results.get("artifacts") or [], "bytes", "retention")
    if not students:
        return None
    figure, axis = _new_figure()
    axis.scatter([e["bytes"] for e in students], [e["retention"] * 100 for e in students],
                 color=STUDENT_COLOR, s=50, label="student artifact", zorder=3)
    _label_points(axis, students, "bytes", lambda e: e["retention"] * 100)
    byte_counts = [e["bytes"] for e in students]
    teacher = _teacher(results)
    if teacher.get("bytes") is not None and teacher.get("retention") is not None:
        axis.scatter([teacher["bytes"]], [teacher["retention"] * 100], marker="*", s=220,
                     color=TEACHER_COLOR, label="teacher (reference, 100%)", zorder=4)
        byte_counts.append(teacher["bytes"])
    _retention_axis(axis, results, [e["retention"] for e in students])
    _log_bytes_axis(axis, byte_counts)
    axis.set_title("Quality vs size")
    axis.legend(loc="best")
    return figure


def latency_vs_size(results: dict):
    ttft = _with(results.get("artifacts") or [], "bytes", "ttft_p50_s")
    tpot = _with(results.get("artifacts") or [], "bytes", "tpot_p50_s")
    if not ttft and not tpot:
        return None
    figure, axis = _new_figure()
    series = (("ttft_p50_s", "time to first token p50", "o", STUDENT_COLOR, ttft),
              ("tpot_p50_s", "time per output token p50", "s", PARETO_COLOR, tpot))
    teacher, milliseconds = _teacher(results), []
    for key, label, marker, color, entries in series:
        entries = sorted(entries, key=lambda e: e["bytes"])
        # markers only: a line through artifacts of different formats would suggest a trend
        axis.plot([e["bytes"] for e in entries], [e[key] * 1000 for e in entries], marker=marker,
                  color=color, linestyle="none", label=f"{label} (students)", zorder=3)
        if key == "ttft_p50_s" or not ttft:  # one set of name labels: both series share x
            _label_points(axis, entries, "bytes", lambda e, key=key: e[key] * 1000)
        milliseconds += [e[key] * 1000 for e in entries]
        if teacher.get(key) is None:
            continue
        milliseconds.append(teacher[key] * 1000)
        if teacher.get("bytes") is not None:
            axis.scatter([teacher["bytes"]], [teacher[key] * 1000], marker="*", s=200, color=color,
                         edgecolor=TEACHER_COLOR, linewidth=1.5, label=f"{label} (teacher)", zorder=4)
        else:  # an API teacher has no size on disk: its latency is a reference line across the chart
            axis.axhline(teacher[key] * 1000, color=color, linestyle="--", linewidth=1,
                         label=f"{label} (teacher API)")
    byte_counts = [e["bytes"] for e in ttft + tpot] + ([teacher["bytes"]] if teacher.get("bytes") is not None else [])
    _log_bytes_axis(axis, byte_counts)
    if min(milliseconds) > 0 and max(milliseconds) / min(milliseconds) > LOG_Y_SPAN:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        axis.set_yscale("log")
        axis.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g}"))
        axis.yaxis.set_minor_formatter(NullFormatter())
        axis.set_ylabel("latency, median (ms, log scale)")
    else:
        axis.set_ylabel("latency, median (ms)")
    axis.set_title("Latency vs size (concurrency 1)")
    # below the axes: reference lines for an API teacher span the full width, any corner would cover one
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    return figure


def _traffic_title(results: dict) -> str:
    traffic = results.get("traffic") or {}
    requests, tokens_in, tokens_out = (traffic.get(k) for k in
                                       ("requests_per_day", "input_tokens_per_request", "output_tokens_per_request"))
    if None in (requests, tokens_in, tokens_out):
        return "Cost per month (30 days)"
    return (f"Cost per month at {requests:,.0f} requests/day, "
            f"{tokens_in + tokens_out:,.0f} tokens/request ({tokens_in:,.0f} in + {tokens_out:,.0f} out)")


def cost_per_month(results: dict):
    teacher = _teacher(results)
    api_name = ((results.get("prices") or {}).get("api") or {}).get("name") or "API"
    if teacher.get("api_what_if"):  # the teacher ran here: self-hosted as measured, the API a what-if
        bars = [("teacher (self-hosted)", teacher.get("usd_per_month"), TEACHER_COLOR),
                (f"what-if: teacher via API ({api_name})", teacher["api_what_if"].get("usd_per_month"), DIM_COLOR)]
    else:
        bars = [(f"teacher API ({api_name})", teacher.get("usd_per_month"), TEACHER_COLOR)]
    bars += [(e["name"], e.get("usd_per_month"), STUDENT_COLOR) for e in results.get("artifacts") or []]
    bars = [bar for bar in bars if bar[1] is not None]
    if not bars:
        return None
    figure, axis = _new_figure()
    labels, dollars, colors = zip(*bars)
    axis.barh(range(len(bars)), dollars, color=colors)
    axis.set_yticks(range(len(bars)), labels)
    axis.invert_yaxis()  # teacher on top, artifacts in export order below
    positive = [d for d in dollars if d > 0]
    if positive and len(positive) == len(dollars) and max(positive) / min(positive) > LOG_X_SPAN:
        axis.set_xscale("log")
        axis.set_xlabel("USD per month (log scale)")
    else:
        axis.set_xlabel("USD per month")
    for row, value in enumerate(dollars):
        axis.annotate(f"${value:,.2f}", (value, row), textcoords="offset points", xytext=(4, 0),
                      va="center", fontsize=9)
    axis.margins(x=0.18)  # room for the value labels right of the longest bar
    axis.grid(axis="y", visible=False)
    axis.set_title(_traffic_title(results), fontsize=11)
    return figure


def pareto(results: dict):
    students = _with(results.get("artifacts") or [], "bytes", "retention")
    if not students:
        return None
    optimal = set(pareto_front(students))
    front = sorted((e for e in students if e["name"] in optimal), key=lambda e: e["bytes"])
    others = [e for e in students if e["name"] not in optimal]
    figure, axis = _new_figure()
    if others:
        axis.scatter([e["bytes"] for e in others], [e["retention"] * 100 for e in others], color=DIM_COLOR,
                     s=45, label="dominated (a smaller artifact is as good)", zorder=3)
    # steps-post: the best retention reachable at or below each size
    axis.plot([e["bytes"] for e in front], [e["retention"] * 100 for e in front], drawstyle="steps-post",
              color=PARETO_COLOR, marker="o", markersize=8, linewidth=2, label="Pareto-optimal", zorder=4)
    _label_points(axis, students, "bytes", lambda e: e["retention"] * 100)
    _retention_axis(axis, results, [e["retention"] for e in students])
    _log_bytes_axis(axis, [e["bytes"] for e in students])
    axis.set_title("Pareto front: smallest size for each retention")
    axis.legend(loc="best")
    return figure


# chart name -> one-sentence caption under the image in report.md and report.html
CAPTIONS = {
    "quality_vs_size": "Top-1 retention vs size on disk; the dashed line is the retention threshold.",
    "latency_vs_size": "Median time to first token and per output token vs size on disk.",
    "cost_per_month": "Monthly cost at the stated traffic: the teacher API vs self-hosting each artifact.",
    "pareto": "Pareto front: artifacts no smaller artifact matches in retention.",
}

# chart name (also the PNG's stem and the report's link) -> drawer returning a Figure or None
CHARTS = {
    "quality_vs_size": quality_vs_size,
    "latency_vs_size": latency_vs_size,
    "cost_per_month": cost_per_month,
    "pareto": pareto,
}
