"""lm-evaluation-harness as an independent judge of a build: its tasks, run by its own
evaluator and OpenAI-compatible clients (``lm_eval_clients.py``), against every model of the
build served by ``edgedistill serve``: the teacher's HF folder and each exported artifact,
one server each, every task on each.

- Log-likelihood tasks (``loglikelihood``, ``multiple_choice``, ``loglikelihood_rolling``)
  and plain ``generate_until`` tasks go through ``local-completions``: token ids from the
  served model's HF tokenizer (the teacher's folder; for artifacts the build's distilled
  student folder, whose tokenizer they keep).
- ``generate_until`` tasks whose YAML asks for chat (``metadata: {chat: true}``) go through
  ``local-chat-completions``, rendered by the server's chat template.

A task spec is a registered lm-eval task name, a task YAML file (its folder becomes an
include path) or a task shipped in ``lm_eval_tasks/`` (``pydocs_qa``, ``pydocs_qa_mc``).
Results per model and task: lm-eval's metrics with their stderr, samples and seconds.
"""

from __future__ import annotations

import difflib
import math
import time
from dataclasses import dataclass
from pathlib import Path

from edgedistill.errors import UserError
from edgedistill.text_stats import one_line

TASKS_DIR = Path(__file__).with_name("lm_eval_tasks")
SHIPPED = {"pydocs_qa": TASKS_DIR / "pydocs_qa.yaml", "pydocs_qa_mc": TASKS_DIR / "pydocs_qa_mc.yaml"}
ALIASES = {"builtin:pydocs-qa": "pydocs_qa", "builtin:pydocs-qa-mc": "pydocs_qa_mc"}
BOOTSTRAP_ITERS = 1000  # stderr of non-mean metrics (bleu, ...); lm-eval's 100,000 takes minutes per task


@dataclass(frozen=True)
class TaskSpec:
    """One ``bench.lm_eval`` entry: what lm-eval loads (a name, a YAML path or a config
    dict) and the files whose content defines it (part of the bench stage's cache key)."""

    spec: str
    load: str | dict
    files: tuple[Path, ...] = ()
    include: Path | None = None  # a YAML file's folder: its siblings (groups, includes) resolve
    registered: bool = False  # an lm-eval task name: needs lm-eval's own task index


@dataclass(frozen=True)
class LoadedTask:
    spec: TaskSpec
    names: tuple[str, ...]  # the tasks lm-eval loaded for the spec (a group expands)
    chat: bool  # generate_until through the chat endpoint


def resolve(spec: str) -> TaskSpec:
    """A task spec as lm-eval will load it; a YAML path that is not a file is a UserError."""
    name = ALIASES.get(spec, spec)
    if name in SHIPPED:
        files = (SHIPPED[name], TASKS_DIR / "utils.py", *data_files(name))
        return TaskSpec(spec, shipped_config(SHIPPED[name]), files)
    path = Path(spec).expanduser()
    if path.suffix in (".yaml", ".yml") or "/" in spec:
        if not path.is_file():
            raise UserError(f"bench.lm_eval '{spec}' is not a file; give a task YAML, an lm-eval task name or one "
                            f"of {', '.join([*SHIPPED, *ALIASES])}")
        path = path.resolve()
        return TaskSpec(spec, str(path), (path,), include=path.parent)
    return TaskSpec(spec, spec, registered=True)


def shipped_config(yaml_path: Path) -> dict:
    """A shipped task's config with its ``data_files`` (relative to the YAML) made absolute:
    lm-eval would read them relative to the working directory."""
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(yaml_path)
    files = config["dataset_kwargs"]["data_files"]
    config["dataset_kwargs"]["data_files"] = {split: str((yaml_path.parent / file).resolve())
                                              for split, file in files.items()}
    return config


def data_files(name: str) -> list[Path]:
    from lm_eval.tasks._yaml_loader import load_yaml

    files = load_yaml(SHIPPED[name], resolve_func=False)["dataset_kwargs"]["data_files"]
    return [(SHIPPED[name].parent / file).resolve() for file in files.values()]


def task_manager(specs: list[TaskSpec]):
    """lm-eval's task index: its own tasks only when a spec names one (indexing them takes
    seconds), plus the folders of the YAML files."""
    from lm_eval.tasks import TaskManager

    includes = sorted({str(s.include) for s in specs if s.include})
    return TaskManager(include_path=includes or None, include_defaults=any(s.registered for s in specs))


def load_tasks(specs: tuple[str, ...]) -> tuple[object, list[LoadedTask]]:
    """(lm-eval TaskManager, the loaded tasks); every problem is a one-line UserError."""
    _require_lm_eval()
    resolved = [resolve(spec) for spec in specs]
    manager = task_manager(resolved)
    return manager, [load_task(spec, manager) for spec in resolved]


def load_task(spec: TaskSpec, manager) -> LoadedTask:
    if spec.registered and spec.load not in manager.all_tasks:
        close = difflib.get_close_matches(spec.spec, [*SHIPPED, *manager.all_tasks], n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(f"bench.lm_eval '{spec.spec}' is not an lm-eval task{hint}; give a registered name, a task "
                        f"YAML or one of {', '.join(SHIPPED)}")
    try:  # loading a task downloads its dataset: offline, a hub dataset that is not cached fails here
        tasks = manager.load([spec.load])["tasks"]
    except Exception as exc:  # lm-eval and datasets raise many kinds (ConnectionError, DatasetNotFoundError, ...)
        reason = one_line(str(exc)) or type(exc).__name__
        raise UserError(f"bench.lm_eval '{spec.spec}' could not be loaded ({reason}); a task whose dataset is not "
                        "local needs the network or the HF datasets cache (offline: a task YAML with dataset_path: json "
                        "and data_files)") from None
    types = {task.OUTPUT_TYPE for task in tasks.values()}
    chat = any(bool((task.config.metadata or {}).get("chat")) for task in tasks.values())
    if chat and types != {"generate_until"}:
        raise UserError(f"bench.lm_eval '{spec.spec}': metadata chat: true applies to generate_until tasks only, "
                        f"this one is {', '.join(sorted(types))}")
    return LoadedTask(spec, tuple(tasks), chat)


def check_tasks(specs: tuple[str, ...]) -> list[Path]:
    """Preflight: load every task (raises UserError naming the problem) and return the files
    that define them."""
    _, tasks = load_tasks(specs)
    return list(dict.fromkeys(file for task in tasks for file in task.spec.files))


def _require_lm_eval() -> None:
    try:
        import lm_eval  # noqa: F401
        from lm_eval.models import openai_completions  # noqa: F401  (needs the [api] extra: tenacity, aiohttp)
        import tenacity  # noqa: F401
    except ImportError as exc:
        raise UserError(f"bench.lm_eval needs lm-evaluation-harness ({exc.name} is missing): "
                        "pip install 'edgedistill[lmeval]'") from None


def spec_paths(specs: list[str]) -> list[str]:
    """CLI specs with YAML files made absolute, so the recorded recipe means the same from any folder."""
    return [str(Path(spec).expanduser().resolve()) if Path(spec).expanduser().is_file() else spec for spec in specs]


# ---- running the tasks against a build's served models


def evaluate_build(specs: tuple[str, ...], limit: int, models: list[tuple], threads: int, log) -> dict:
    """results.json's ``lm_eval``: every task on every model. ``models``: (suite Target, its
    HF folder: tokenizer and context length) pairs, teacher first."""
    manager, tasks = load_tasks(specs)
    results = {target.name: evaluate_target(target, model_dir, tasks, manager, limit, threads, log)
               for target, model_dir in models}
    names = list(dict.fromkeys(name for rows in results.values() for name in rows))
    return {"tasks": names, "models": results, "settings": settings(specs, limit)}


def evaluate_target(target, model_dir: Path, tasks: list[LoadedTask], manager, limit: int, threads: int, log) -> dict:
    """``{task: metrics}`` of one model, served once for all tasks; a task (or the whole
    model) that could not be evaluated gets ``{"error": why}``."""
    import requests

    from edgedistill.benchmarks.client import TargetError
    from edgedistill.benchmarks.served import ServedModel

    def failed(why: str) -> dict:
        log(f"lm-eval: {target.name}: not evaluated: {why}")
        return {name: {"error": why} for task in tasks for name in task.names}

    if target.api is not None:  # its tokenizer and whether it scores prompt token ids are unknown
        return failed("an external API teacher; lm-eval runs against the models edgedistill serves")
    if target.entry["missing"]:
        return failed(target.entry["error"])
    from edgedistill.benchmarks import lm_eval_clients

    started, results, length = time.perf_counter(), {}, context_length(model_dir)
    try:
        with ServedModel(target.path, target.name, threads=threads) as server:
            for task in tasks:
                lm = (lm_eval_clients.chat_lm(server.url, target.name, length) if task.chat
                      else lm_eval_clients.completions_lm(server.url, target.name, model_dir, length))
                try:
                    results.update(run_task(lm, task, manager, limit))
                except requests.RequestException as exc:  # the server refused or failed a request
                    results.update({name: {"error": request_error(exc)} for name in task.names})
    except TargetError as exc:
        return failed(str(exc))
    log(f"lm-eval: {target.name}: {len(tasks)} task(s) in {time.perf_counter() - started:.1f}s")
    return results


def context_length(model_dir: Path) -> int:
    """Tokens the model holds (its HF config's): lm-eval cuts longer prompts from the left."""
    import json

    return json.loads((model_dir / "config.json").read_text(encoding="utf-8"))["max_position_embeddings"]


def run_task(lm, task: LoadedTask, manager, limit: int) -> dict:
    """One task on one client: ``{name: {metric: value, metric_stderr: value, "samples",
    "seconds"}}`` (a group gives a row per task and one for itself)."""
    import lm_eval

    started = time.perf_counter()
    output = lm_eval.simple_evaluate(model=lm, tasks=[task.spec.load], task_manager=manager, limit=limit or None,
                                     bootstrap_iters=BOOTSTRAP_ITERS, log_samples=False, apply_chat_template=task.chat)
    seconds = time.perf_counter() - started
    samples = {name: counts["effective"] for name, counts in output.get("n-samples", {}).items()}
    return {name: {**metric_values(row), "samples": samples.get(name), "seconds": seconds}
            for name, row in output["results"].items()}


def metric_values(row: dict) -> dict:
    """lm-eval's ``"metric,filter"`` keys as ``metric`` (filter ``none``) or ``metric,filter``;
    a value it could not compute ("N/A", NaN) as None."""
    values = {}
    for key, value in row.items():
        metric, comma, filter_name = key.partition(",")
        if not comma:  # alias, name, sample_len
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        values[metric if filter_name == "none" else key] = float(value) if number else None
    return values


def request_error(exc) -> str:
    """The server's own words where it answered (an OpenAI error body), else the exception's."""
    response = getattr(exc, "response", None)
    try:
        return f"HTTP {response.status_code}: {response.json()['error']['message']}"
    except (AttributeError, KeyError, TypeError, ValueError):
        return one_line(str(exc))


def settings(specs: tuple[str, ...], limit: int) -> dict:
    import lm_eval

    return {"specs": list(specs), "limit": limit or None, "bootstrap_iters": BOOTSTRAP_ITERS,
            "lm_eval_version": getattr(lm_eval, "__version__", None),
            "clients": {"loglikelihood": "local-completions (token ids)", "generate_until": "local-completions (text)",
                        "generate_until (chat: true)": "local-chat-completions"},
            "tokenizer": "the served model's HF folder: the teacher's, the distilled student's for its artifacts"}


# ---- report


def report_table(lm_eval: dict | None) -> dict | None:
    """report.Table fields (title, headers, rows, notes) of results.json's ``lm_eval``: a row
    per model, a column per task and metric, cells "value ± stderr"."""
    if not lm_eval:
        return None
    columns = [(task, metric) for task in lm_eval["tasks"] for metric in _metrics(lm_eval["models"], task)]
    rows, notes = [], []
    for model, tasks in lm_eval["models"].items():
        rows.append([model] + [_cell(tasks.get(task) or {}, metric) for task, metric in columns])
        errors = {row["error"] for row in tasks.values() if row.get("error")}
        notes += [f"{model}: {error}" for error in sorted(errors)]
    samples = {task: row["samples"] for tasks in lm_eval["models"].values() for task, row in tasks.items()
               if row.get("samples")}
    limit = (lm_eval.get("settings") or {}).get("limit")
    notes.insert(0, "samples per task: " + ", ".join(f"{task} {count}" for task, count in samples.items())
                 + (f" (limit {limit})" if limit else "") + "; ± is lm-eval's standard error over samples (every "
                 "model scores the same ones, so a difference between rows is more precise than ± suggests)")
    return {"title": "lm-evaluation-harness", "headers": ["model"] + [f"{task} {metric}" for task, metric in columns],
            "rows": rows, "notes": notes}


def _metrics(models: dict, task: str) -> list[str]:
    """The task's metric names in lm-eval's order, as the first model that has them reports them."""
    for tasks in models.values():
        row = tasks.get(task) or {}
        names = [key for key in row if key not in ("samples", "seconds", "error") and "_stderr" not in key]
        if names:
            return names
    return []


def _cell(row: dict, metric: str) -> str:
    value = row.get(metric)
    if value is None:
        return "missing" if row.get("error") else "-"
    stderr = row.get(metric.replace(",", "_stderr,", 1) if "," in metric else f"{metric}_stderr")
    return with_error(value, stderr)


def with_error(value: float, stderr: float | None) -> str:
    """``value ± stderr``, both to the decimal of the stderr's second significant digit."""
    if stderr is None:
        return f"{value:.4g}"
    if stderr <= 0:
        return f"{value:.4g} ± 0"
    decimals = max(0, 1 - math.floor(math.log10(stderr)))
    return f"{value:,.{decimals}f} ± {stderr:,.{decimals}f}"


def console_table(lm_eval: dict):
    """The report's table for the terminal (rich)."""
    from rich.table import Table

    fields = report_table(lm_eval)
    table = Table(*fields["headers"], title=fields["title"])
    for row in fields["rows"]:
        table.add_row(*row)
    return table
