"""Command line: ``edgedistill build | bench | cache-teacher | generate-data | recipes | verify | generate | serve``
(generate-data in ``cli_datagen.py``, generate and serve in ``cli_runtime.py``).

Exit codes: 0 ok, 1 a verification failed, 2 bad input (one line on stderr, no traceback),
3 an internal error (a bug: the traceback is printed), 130 interrupted.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from typer._click import exceptions as click_errors  # typer 0.29 vendors click: catch its own classes

from edgedistill.cli_datagen import generate_data
from edgedistill.cli_runtime import generate, serve
from edgedistill.errors import UserError, VerificationError
from edgedistill.summary import bench_table, quality_table

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Distill a Hugging Face causal LM into a small, quantized, device-ready student.",
)
console = Console(width=None if sys.stdout.isatty() else 120)  # pipes/CI get full rows
DEFAULT_RECIPE = "docs-assistant"  # the embedded demo: Python-docs teacher trained by this repo


@app.command()
def build(
    recipe: Optional[str] = typer.Argument(None, help=f"bundled recipe name or YAML path (default: {DEFAULT_RECIPE})"),
    out: Optional[Path] = typer.Option(None, "--out", help="build folder (default: edgedistill-out/<recipe name>)"),
    overrides: List[str] = typer.Option([], "--set", help="override a recipe key, e.g. --set distill.alpha=0.3"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the resolved recipe and the stage plan, run nothing"),
) -> int:
    """Prune, distill, export, verify and benchmark: teacher -> device-ready student."""
    import yaml

    from edgedistill.build import build as run_build
    from edgedistill.build import plan
    from edgedistill.preflight import preflight
    from edgedistill.config import to_dict
    from edgedistill.recipe_loader import load_recipe
    from edgedistill.pipeline.prune_targets import describe_plan
    from edgedistill.processes import current

    resolved = load_recipe(recipe, overrides, default=DEFAULT_RECIPE)
    out_dir = out or Path("edgedistill-out") / resolved.name
    if dry_run:
        console.print(yaml.safe_dump(to_dict(resolved), sort_keys=False).rstrip(), markup=False, highlight=False)
        console.print(f"stage plan for {out_dir}:", highlight=False)
        pre = preflight(resolved)  # hashes a local teacher once for both lines below
        for stage, status in plan(resolved, out_dir, pre):
            console.print(f"  {stage:<8} {status}", highlight=False)
        if resolved.student == "prune" or resolved.prune.student:
            pruned = pre["teacher_source"] if resolved.student == "prune" else pre["student_source"]
            console.print(describe_plan(resolved.prune, pruned), highlight=False)
        return 0

    def on_stage(name: str, status: str, seconds: float) -> None:
        took = {"ran": f"{seconds:.1f}s", "cached": f"(built in {seconds:.1f}s)", "skip": ""}[status]
        console.print(f"[bold]{name:<8}[/bold] {status:<7} {took}", highlight=False)

    manifest = run_build(resolved, out_dir, on_stage)
    if current().main:  # under a multi-process launch one process reports
        print_summary(manifest, out_dir)
    return _exit_code(manifest)


def _exit_code(manifest: dict) -> int:
    """1 when an artifact failed verification or could not be benchmarked; 2 (after the
    report is written) when the teacher API could not be measured: its URL, model or key
    is wrong or it is down."""
    bench = manifest["stages"].get("bench", {}).get("artifact", {}).get("payload", {})
    if bench.get("teacher_error"):
        fix = ("fix --teacher-api / teacher_api.url and rerun `edgedistill bench`" if bench.get("teacher_format") == "api"
               else "see the error; `edgedistill serve` on the teacher folder shows it")
        _fail(f"teacher not measured: {bench['teacher_error']}; the report marks its rows missing ({fix})", 2)
        return 2
    if bench.get("missing_artifacts"):
        _fail(f"not benchmarked (their rows are missing in the report): {', '.join(bench['missing_artifacts'])}", 1)
        return 1
    return 0 if manifest["status"] == "complete" else 1


def fallback_lines(artifacts: list[dict]) -> list[str]:
    """One line per GGUF artifact some of whose tensors got another type than its mix asked
    for (rows that cannot hold the type's blocks), so "q4_k_m" is never silently mostly Q5_0."""
    from collections import Counter

    lines = []
    for art in artifacts:
        fallbacks = (art.get("facts") or {}).get("fallbacks") or []
        if fallbacks:
            kinds = Counter(f"{f['wanted']}->{f['actual']}" for f in fallbacks)
            detail = ", ".join(f"{kind} x{count}" for kind, count in sorted(kinds.items()))
            lines.append(f"{art['name']}: {len(fallbacks)} tensors fell back ({detail}) because their rows do not "
                         "hold the type's blocks; each is listed in the manifest (facts.fallbacks)")
    return lines


def print_summary(manifest: dict, out_dir: Path) -> None:
    metrics = manifest["metrics"]
    table = Table("artifact", "path", "bytes", "device ready", "mean KL", "top-1 vs torch", "max |dlogit|", "decode tok/s",
                  title="artifacts")
    for art in manifest["artifacts"]:
        parity = art["parity"] or {}
        table.add_row(
            art["name"], art["path"], f"{art['bytes']:,}", "yes" if art["device_ready"] else f"NO: {art['reason']}",
            f"{parity.get('mean_kl', float('nan')):.2e}",
            f"{parity.get('top1_agreement', float('nan')):.4f}", f"{parity.get('max_abs_logit_diff', float('nan')):.2e}",
            f"{art['decode_tokens_per_s'] or 0:.0f}",
        )
    console.print(table)
    for line in fallback_lines(manifest["artifacts"]):
        console.print(line, highlight=False)
    console.print(quality_table(metrics))
    results_file = out_dir / "bench" / "results.json"
    if "bench" in manifest["stages"] and results_file.is_file():
        console.print(bench_table(json.loads(results_file.read_text(encoding="utf-8"))))
        console.print(f"report: {out_dir / 'bench' / 'report.html'} (and report.md, results.json)", highlight=False)
    console.print(f"manifest: {out_dir / 'manifest.json'} (status: {manifest['status']}, "
                  f"build {metrics.get('build_seconds', 0):.0f}s of stage compute)")


@app.command()
def bench(
    build_dir: Path = typer.Argument(..., help="a build folder written by `edgedistill build`"),
    compare: Optional[Path] = typer.Option(None, "--compare", help="another build folder: print the deltas between "
                                           "its bench results and BUILD_DIR's (measures nothing)"),
    teacher_api: Optional[str] = typer.Option(None, "--teacher-api", help="OpenAI-compatible base URL of the teacher, "
                                              "e.g. http://host:8000/v1 (default: serve the build's teacher locally)"),
    teacher_model: Optional[str] = typer.Option(None, "--teacher-model", help="model name sent to --teacher-api"),
    teacher_api_key_env: Optional[str] = typer.Option(None, "--teacher-api-key-env",
                                                      help="environment variable holding the API key "
                                                           "(default EDGEDISTILL_TEACHER_API_KEY)"),
    teacher_api_mode: Optional[str] = typer.Option(None, "--teacher-api-mode", help="completions (text) or chat"),
    prices: Optional[Path] = typer.Option(None, "--prices", help="price table YAML (default: the shipped assumptions)"),
    with_builds: List[Path] = typer.Option([], "--with", help="another build folder of the same teacher (e.g. an "
                                           "alternative: --set alternative=NAME); its artifacts are measured in the "
                                           "same run, beside this build's (repeatable)"),
    overrides: List[str] = typer.Option([], "--set", help="override a bench key, e.g. --set bench.cost.requests_per_day=5000"),
    lm_eval: List[str] = typer.Option([], "--lm-eval", help="also run this lm-evaluation-harness task on every model: a "
                                      "task name, a task YAML, or pydocs_qa / pydocs_qa_mc (repeatable; sets bench.lm_eval)"),
    lm_eval_limit: Optional[int] = typer.Option(None, "--lm-eval-limit", min=0, help="samples per lm-eval task "
                                                "(0 = all; sets bench.lm_eval_limit)"),
) -> int:
    """Measure the teacher behind an API against every student artifact of a build: latency,
    memory, quality retention, over-distillation checks and cost; writes bench/report.html."""
    from rich.markup import escape

    from edgedistill.artifacts import read_manifest

    if compare is not None:
        return _compare(build_dir, compare)
    manifest = read_manifest(build_dir)
    if manifest is None:
        raise UserError(f"{build_dir} has no readable manifest.json; pass a folder written by `edgedistill build`")
    if "export" not in manifest["stages"]:
        raise UserError(f"{build_dir} has no exported artifacts yet; run `edgedistill build` to finish it")
    bad = [o for o in overrides if not o.startswith("bench.")]
    if bad:
        raise UserError(f"--set {bad[0]}: `edgedistill bench` takes bench.* keys only; use `edgedistill build --set` "
                        "for the others")
    api_options = {"url": teacher_api, "model": teacher_model, "key_env": teacher_api_key_env, "mode": teacher_api_mode}
    from edgedistill.build import build as run_build
    from edgedistill.recipe_loader import recipe_with_overrides

    recorded = dict(manifest["recipe"])
    # the options are strings as typed (a model named 1.5 stays "1.5"), not YAML like --set values
    api = {**recorded.get("teacher_api", {}), **{k: v for k, v in api_options.items() if v is not None}}
    if teacher_api is not None:
        if recorded.get("teacher_api", {}).get("url") and recorded["teacher_api"].get("distill", True):
            raise UserError("this build distilled from teacher_api.url; its bench measures that API (rerun "
                            "`edgedistill bench` without --teacher-api, or build again with another teacher_api.url)")
        api["distill"] = False  # the bench's teacher row only: the student is not retrained
    recorded["teacher_api"] = api
    if prices:
        recorded["bench"] = {**recorded.get("bench", {})}
        recorded["bench"]["cost"] = {**recorded["bench"].get("cost", {}), "prices": str(prices.resolve())}
    if with_builds:
        recorded["bench"] = {**recorded.get("bench", {}), "with_builds": [str(p.resolve()) for p in with_builds]}
    if lm_eval:
        from edgedistill.benchmarks.lm_eval_bench import spec_paths

        recorded["bench"] = {**recorded.get("bench", {}), "lm_eval": spec_paths(lm_eval)}
    if lm_eval_limit is not None:
        recorded["bench"] = {**recorded.get("bench", {}), "lm_eval_limit": lm_eval_limit}
    recipe = recipe_with_overrides(recorded, [*overrides, "bench.enabled=true"])

    def on_stage(name: str, status: str, seconds: float) -> None:
        if status == "ran":  # bench always; another stage only when its inputs changed since the build
            console.print(f"[bold]{name:<8}[/bold] ran     {seconds:.1f}s", highlight=False)

    manifest = run_build(recipe, build_dir, on_stage, force=frozenset({"bench"}))
    results = json.loads((build_dir / "bench" / "results.json").read_text(encoding="utf-8"))
    console.print(bench_table(results))
    if results.get("lm_eval"):
        from edgedistill.benchmarks.lm_eval_bench import console_table

        console.print(console_table(results["lm_eval"]))
    for entry in (results["teacher"], *results["artifacts"]):
        for warning in entry["warnings"]:
            console.print(f"[yellow]warning[/yellow] {escape(entry['name'])}: {escape(warning)}", highlight=False)
    console.print(f"report: {build_dir / 'bench' / 'report.html'} (and report.md, results.json)", highlight=False)
    return _exit_code(manifest)


def _compare(build_dir: Path, other: Path) -> int:
    from edgedistill.benchmarks.compare import compare as compare_results
    from edgedistill.benchmarks.compare import render_compare
    from edgedistill.benchmarks.suite import SCHEMA_VERSION

    loaded = []
    for folder in (build_dir, other):
        file = folder / "bench" / "results.json"
        if not file.is_file():
            raise UserError(f"{folder} has no bench/results.json; run `edgedistill bench {folder}` first")
        try:
            results = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{file} is not valid JSON ({exc.msg}); rerun `edgedistill bench {folder}`") from None
        if not isinstance(results, dict) or results.get("schema_version") != SCHEMA_VERSION:
            raise UserError(f"{file} is not bench results of schema version {SCHEMA_VERSION} (another edgedistill "
                            f"version wrote it?); rerun `edgedistill bench {folder}`")
        loaded.append(results)
    sys.stdout.write(render_compare(compare_results(loaded[0], loaded[1]), str(build_dir), str(other)) + "\n")
    return 0


@app.command("cache-teacher")
def cache_teacher(
    recipe: Optional[str] = typer.Argument(None, help=f"bundled recipe name or YAML path (default: {DEFAULT_RECIPE})"),
    out: Optional[Path] = typer.Option(None, "--out", help="build folder (default: edgedistill-out/<recipe name>)"),
    overrides: List[str] = typer.Option([], "--set", help="override a recipe key, e.g. --set data.seq_len=256"),
    topk: Optional[int] = typer.Option(None, "--topk", min=1, help="tokens kept per position (default: "
                                       "distill.teacher_topk, or 64 when the recipe trains online)"),
) -> int:
    """Run the teacher once over the training data and store its top-k log-probs; a build of
    the same recipe with distill.teacher_topk set then trains without loading the teacher."""
    from edgedistill.build import cache_teacher as run_cache
    from edgedistill.recipe_loader import load_recipe

    resolved = load_recipe(recipe, overrides, default=DEFAULT_RECIPE)
    k = topk or resolved.distill.teacher_topk or 64
    if k != resolved.distill.teacher_topk:
        resolved = load_recipe(recipe, [*overrides, f"distill.teacher_topk={k}"], default=DEFAULT_RECIPE)
    out_dir = out or Path("edgedistill-out") / resolved.name
    cache = run_cache(resolved, out_dir)
    meta = cache.meta
    size = sum(entry["bytes"] for entry in meta["files"].values())
    console.print(f"teacher cache {cache.folder}: k={meta['k']} at T={meta['temperature']:g}, {meta['windows']} windows x "
                  f"{meta['seq_len'] - 1} positions, {size / 2**20:.1f} MiB, {cache.bytes_per_token:.1f} bytes/token, "
                  f"mean tail mass {cache.mean_tail_mass():.4f}", highlight=False)
    if resolved.distill.teacher_topk != load_recipe(recipe, overrides, default=DEFAULT_RECIPE).distill.teacher_topk:
        console.print(f"build with --set distill.teacher_topk={k} to train from it", highlight=False)
    return 0


@app.command()
def recipes(keys: bool = typer.Option(False, "--keys", help="print every recipe key (default, allowed values, "
                                                              "meaning) as a Markdown table instead")) -> int:
    """List the bundled recipes (or, with --keys, every key a recipe may set)."""
    import yaml

    from edgedistill.recipe_loader import bundled_recipes

    if keys:
        from edgedistill.recipe_reference import key_table

        print(key_table())
        return 0

    table = Table("name", "description")
    for name, path in bundled_recipes().items():
        table.add_row(name, (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("description", ""))
    console.print(table)
    return 0


@app.command()
def verify(build_dir: Path = typer.Argument(..., help="a build folder (holds manifest.json)")) -> int:
    """Re-check a build: file hashes against the manifest and every artifact's parity gate."""
    from edgedistill.build import reverify

    problems, results = reverify(build_dir)
    for problem in problems:
        console.print(f"[red]integrity[/red] {problem}", highlight=False)
    table = Table("artifact", "device ready", "top-1", "mean KL", "max |dlogit|", "greedy", title="parity")
    for name, result in results.items():
        table.add_row(
            name, "yes" if result["device_ready"] else "NO: " + "; ".join(result["failures"]),
            f"{result.get('top1_agreement', float('nan')):.4f}", f"{result.get('mean_kl', float('nan')):.2e}",
            f"{result.get('max_abs_logit_diff', float('nan')):.2e}", str(result.get("greedy_match", "-")),
        )
    if results:
        console.print(table)
    failed = [name for name, result in results.items() if not result["device_ready"]]
    if problems or failed:
        raise VerificationError(f"{len(problems)} integrity problem(s), {len(failed)} artifact(s) failing parity")
    return 0


app.command("generate-data")(generate_data)
app.command()(generate)
app.command()(serve)


def _fail(message: str, code: int) -> int:
    from rich.markup import escape

    Console(stderr=True).print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point: maps errors to exit codes (0 ok, 1 verification, 2 bad input, 3 internal)."""
    try:
        result = app(args=argv, prog_name="edgedistill", standalone_mode=False)
    except UserError as exc:
        return _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 2)
    except click_errors.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else "")
        return 0
    except click_errors.UsageError as exc:
        return _fail(exc.format_message().splitlines()[0], 2)
    except VerificationError as exc:
        return _fail(str(exc), 1)
    except (typer.Abort, KeyboardInterrupt):
        return _fail("interrupted; rerun the same command to resume", 130)
    except Exception:  # a bug, not bad input: keep the traceback for the report
        traceback.print_exc()
        return _fail("internal error (traceback above); please report it", 3)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
