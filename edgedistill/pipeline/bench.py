"""Bench stage: the teacher behind an OpenAI-compatible API against every exported student
artifact, measured over real HTTP (``benchmarks/suite.py``), scored teacher-forced through
the runtime, checked for over-distillation, priced, and written up as
``bench/results.json`` + ``report.md`` + ``report.html`` + ``plots/*.png``.

The torch-side full held-out comparison of the distilled student with its teacher
(test split and QA set, ``pipeline/evaluate.py``) is kept as the manifest's quality
metrics; the per-artifact scores use a capped subset of the same windows.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from edgedistill.artifacts import Artifact, atomic_write_json, is_under, record_files
from edgedistill.progress import say
from edgedistill.stage_context import StageContext

OUTPUTS = ("bench",)
PASSAGE_TOKENS = 256  # the retrieved passage before a question in half of the latency prompts


def metric_name(artifact_name: str, quantity: str) -> str:
    """Stable snake_case manifest metric, e.g. ``decode_tokens_per_s_gguf_f16``."""
    return f"{quantity}_{artifact_name.replace('-', '_')}"


def evaluate_quality(bench_cfg, seq_len: int, inp: Artifact) -> dict:
    """Test-split and QA metrics of the distilled student against its teacher (torch, fp32)."""
    from edgedistill.hf import load_model, load_tokenizer
    from edgedistill.data import eval_windows
    from edgedistill.pipeline.evaluate import load_qa_pairs, quality_report

    student_dir, teacher_dir = inp.find("distill").model_dir, inp.find("teacher").model_dir
    tokenizer = load_tokenizer(student_dir)
    windows = eval_windows(bench_cfg.eval_path, tokenizer, seq_len, bench_cfg.eval_windows) if bench_cfg.eval_path else None
    pairs = load_qa_pairs(bench_cfg.qa_path, bench_cfg.qa_pairs) if bench_cfg.qa_path else None
    return quality_report(load_model(student_dir), load_model(teacher_dir), tokenizer, windows, pairs, seq_len)


def answer_questions(bench_cfg, seed: int) -> list:
    """The held-out questions of ``bench.answers`` (empty when off)."""
    answers = bench_cfg.answers
    if not answers.questions:
        return []
    from edgedistill.benchmarks.answers import load_answer_questions

    return load_answer_questions(answers.questions, answers.test_pages, answers.independent, answers.paraphrased, seed)


def log(message: str) -> None:
    say(f"  bench: {message}")


def scoring_windows(cfg: dict, tokenizer) -> tuple[list[list[int]], str]:
    """Held-out windows every model is scored on: the eval text when the recipe names one,
    else the training data's held-out windows; and what they are."""
    from edgedistill.data import eval_windows, packed_examples

    bench_cfg, count = cfg["bench"], cfg["bench"].artifact_eval_windows
    if bench_cfg.eval_path:
        windows = eval_windows(bench_cfg.eval_path, tokenizer, cfg["seq_len"], count)
        return windows.tolist(), f"{bench_cfg.eval_path} ({len(windows)} windows of {cfg['seq_len']} tokens)"
    _, heldout = packed_examples(cfg["data"], tokenizer, cfg["seed"])
    windows = heldout.ids[:count]
    return windows.tolist(), f"held-out windows of the training data ({len(windows)} of {cfg['seq_len']} tokens)"


def scoring_qa(bench_cfg, tokenizer, seq_len: int) -> list[tuple[list[int], int]]:
    from edgedistill.pipeline.evaluate import answer_tokens, load_qa_pairs

    if not bench_cfg.qa_path or not bench_cfg.artifact_qa_pairs:
        return []
    pairs = [answer_tokens(tokenizer, p["prompt"], p["answer"], seq_len)
             for p in load_qa_pairs(bench_cfg.qa_path, bench_cfg.artifact_qa_pairs)]
    return [(ids, first) for ids, first in pairs if first < len(ids)]


def targets(inp: Artifact, api_cfg, student_params: int | None, teacher_params: int | None):
    """(teacher Target, student Targets in export order); ``api_cfg``: the recipe's
    ``teacher_api`` section when it names a URL (the teacher row is then that API)."""
    from edgedistill.benchmarks.suite import Target

    export = inp.find("export")
    students = []
    for entry in export.payload["exports"]:
        size = sum(f.bytes for f in export.files if is_under(f.path, entry["path"]))
        source = entry.get("source", "student")
        students.append(Target(entry["name"], "student", entry["format"], entry["quantization"],
                               export.root / entry["path"], size,
                               teacher_params if source == "teacher" else student_params, source=source))
    if api_cfg is not None:
        api = {"url": api_cfg.url, "model": api_cfg.model or "teacher",
               "api_key": os.environ.get(api_cfg.key_env) or None, "mode": api_cfg.mode}
        teacher = Target("teacher", "teacher", "api", api=api, params=teacher_params)
    else:
        teacher_dir = inp.find("teacher").model_dir
        teacher = Target("teacher", "teacher", "hf", path=teacher_dir, bytes=folder_bytes(teacher_dir),
                         params=teacher_params)
    return teacher, students


def other_build_targets(folders: tuple[str, ...], teacher_hash: str, teacher_params: int | None) -> list:
    """Targets for the exported artifacts of other builds of the same teacher
    (``bench.with_builds``), named ``<build name>/<artifact>``; an artifact that failed its
    own build's parity gate carries that as a warning."""
    from edgedistill.benchmarks.suite import Target
    from edgedistill.hf import count_parameters_on_disk

    found = []
    for folder in map(Path, folders):
        manifest = read_other_build(folder, teacher_hash)
        recipe, stages = manifest["recipe"], manifest["stages"]
        label = recipe.get("name") or folder.name
        export = stages["export"]["artifact"]
        parity = ((stages.get("verify") or {}).get("artifact") or {}).get("payload", {}).get("results", {})
        student_params = count_parameters_on_disk(folder / stages["distill"]["artifact"]["payload"]["model_dir"])
        for entry in export["payload"]["exports"]:
            size = sum(f["bytes"] for f in export["files"] if is_under(f["path"], entry["path"]))
            source = entry.get("source", "student")
            target = Target(f"{label}/{entry['name']}", "student", entry["format"], entry["quantization"],
                            folder / entry["path"], size, teacher_params if source == "teacher" else student_params,
                            source=f"{label}:{source}")
            target.entry["device_ready"] = bool((parity.get(entry["name"]) or {}).get("device_ready", False))
            if not target.entry["device_ready"]:
                target.problems.append(f"not device-ready in {folder} (its parity gate failed or did not run)")
            found.append(target)
    return found


def read_finished_build(folder: Path) -> dict:
    """The manifest of a ``bench.with_builds`` folder, checked to hold exports (preflight and bench)."""
    from edgedistill.artifacts import read_manifest
    from edgedistill.errors import UserError

    manifest = read_manifest(folder)
    if manifest is None or "export" not in manifest.get("stages", {}):
        raise UserError(f"bench.with_builds: {folder} holds no finished build (no readable manifest with exports); "
                        "build it first, e.g. `edgedistill build RECIPE --set alternative=NAME`")
    return manifest


def read_other_build(folder: Path, teacher_hash: str) -> dict:
    """The manifest of a ``bench.with_builds`` folder, checked to hold exports of this teacher."""
    from edgedistill.errors import UserError

    manifest = read_finished_build(folder)
    if manifest["stages"]["teacher"]["artifact"]["hash"] != teacher_hash:
        raise UserError(f"bench.with_builds: {folder} was distilled from another teacher than this build's; "
                        "compare builds of one teacher")
    return manifest


def folder_bytes(folder: Path) -> int:
    """What a deployment of an HF folder ships: weights, config and tokenizer files."""
    kinds = (".safetensors", ".bin", ".json", ".model", ".jinja")
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file() and f.suffix in kinds
               and not f.name.startswith("training_"))


def run(cfg: dict, inp: Artifact, ctx: StageContext) -> Artifact:
    """cfg: {"bench": BenchConfig, "seq_len", "data": DataConfig, "seed", "eval_content", "recipe_name"}."""
    out_dir = ctx.out_dir
    from edgedistill.benchmarks import cost, overdistill, suite
    from edgedistill.prices import load_prices
    from edgedistill.benchmarks.machine import machine_info
    from edgedistill.benchmarks.recommend import Constraint, recommend
    from edgedistill.hf import count_parameters_on_disk

    bench_cfg, seq_len = cfg["bench"], cfg["seq_len"]
    costs = bench_cfg.cost
    prices = load_prices(costs.prices, costs.api_price, costs.hardware)
    traffic = cost.Traffic(costs.requests_per_day, costs.input_tokens_per_request, costs.output_tokens_per_request,
                           costs.utilization)
    student_dir, teacher_dir = inp.find("distill").model_dir, inp.find("teacher").model_dir
    inputs = BenchInputs.prepare(cfg, student_dir)
    settings = suite.Settings(inputs.prompts, inputs.probe_groups, bench_cfg.decode_tokens, bench_cfg.answer_tokens,
                              bench_cfg.repeats, bench_cfg.warmup, bench_cfg.concurrency, suite.default_threads(),
                              bench_cfg.answer_stop, bench_cfg.student_api_mode)

    teacher_params = count_parameters_on_disk(teacher_dir)
    teacher, students = targets(inp, cfg.get("teacher_api"), count_parameters_on_disk(student_dir), teacher_params)
    parity = inp.find("verify").payload.get("results", {}) if inp.stage == "verify" else {}
    for target in students:
        target.entry["device_ready"] = (parity.get(target.name) or {}).get("device_ready")
    students += other_build_targets(bench_cfg.with_builds, inp.find("teacher").hash, teacher_params)
    for target in (teacher, *students):
        suite.measure_served(target, settings, log)
    scores = teacher_forced_scores(teacher_dir, students, inputs, settings.threads)
    suite.add_quality(teacher, students, scores)
    if inputs.questions:
        suite.add_answer_quality(teacher, students, inputs.questions)
    suite.add_comparisons(teacher, students, overdistill.THRESHOLDS)
    suite.add_costs(teacher, students, prices, traffic)

    torch_quality = evaluate_quality(bench_cfg, seq_len, inp) if (bench_cfg.eval_path or bench_cfg.qa_path) else {}
    results = suite.results_document(
        teacher, students, settings, traffic, prices,
        build={"dir": str(ctx.build_dir), "recipe": cfg.get("recipe_name"), "teacher": str(teacher_dir)},
        machine=machine_info(), extra_settings=inputs.describe(), warnings=report_warnings(teacher, prices, settings.threads))
    results["quality_torch"] = torch_quality
    floor = bench_cfg.recommend
    results["recommendation"] = recommend(results["artifacts"],
                                          Constraint(floor.min_retention, floor.max_mb, floor.min_decode_tokens_per_s))
    if bench_cfg.lm_eval:
        from edgedistill.benchmarks.lm_eval_bench import evaluate_build

        # each artifact is scored with the tokenizer of the model it was exported from
        models = [(teacher, teacher_dir), *((t, teacher_dir if t.source == "teacher" else student_dir) for t in students)]
        results["lm_eval"] = evaluate_build(bench_cfg.lm_eval, bench_cfg.lm_eval_limit, models, settings.threads, log)
    write_outputs(out_dir / "bench", results, teacher, students, settings)

    rows, metrics = summary_rows(results), dict(torch_quality)
    for row in rows:
        for key in ("decode_tokens_per_s", "bytes", "ttft_p50_s", "retention", "usd_per_month"):
            if isinstance(row.get(key), (int, float)):
                metrics[metric_name(row["name"], key)] = row[key]
    # a teacher API that was down is measured again by the next build (a student that failed would fail again)
    payload = {"artifacts": rows, "teacher_error": teacher.entry["error"] if teacher.entry["missing"] else None,
               "teacher_format": teacher.format, "missing_artifacts": [t.name for t in students if t.entry["missing"]],
               "retry": teacher.entry["missing"] and teacher.format == "api"}
    return Artifact("bench", out_dir, record_files(out_dir, ["bench"]), payload, metrics, inp)


@dataclass(frozen=True)
class BenchInputs:
    """What every model is measured on: scoring windows and QA pairs (token ids), the
    latency prompt set and the probe questions' phrasings."""

    windows: list[list[int]]
    windows_label: str
    qa: list[tuple[list[int], int]]
    prompts: list[str]
    prompt_tokens: list[int]
    probe_groups: list[list[str]]
    questions: list = ()  # answers.Question per probe group when bench.answers is on

    @classmethod
    def prepare(cls, cfg: dict, student_dir: Path) -> "BenchInputs":
        from edgedistill.benchmarks.probes import Probe, latency_prompts, load_probes
        from edgedistill.hf import load_tokenizer

        bench_cfg = cfg["bench"]
        tokenizer = load_tokenizer(student_dir)
        windows, label = scoring_windows(cfg, tokenizer)
        context = json.loads((student_dir / "config.json").read_text(encoding="utf-8"))["max_position_embeddings"]
        passage_tokens = max(0, min(PASSAGE_TOKENS, context - bench_cfg.decode_tokens - 64))
        passages = [tokenizer.decode(w[:passage_tokens]) for w in windows] if passage_tokens else []
        questions = answer_questions(bench_cfg, cfg["seed"])
        if questions:  # the held-out questions are also what the over-distillation checks read
            probes = [Probe(q.id, q.phrasings) for q in questions]
        else:
            probes = load_probes(bench_cfg.probe_path, bench_cfg.probe_questions)
        prompts = latency_prompts(probes, passages, bench_cfg.latency_prompts)
        return cls(windows, label, scoring_qa(bench_cfg, tokenizer, cfg["seq_len"]), prompts,
                   [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts],
                   [list(p.phrasings) for p in probes], questions)

    def describe(self) -> dict:
        sets = {}
        for question in self.questions:
            sets[question.set] = sets.get(question.set, 0) + 1
        return {"answer_questions": sets, "answer_phrasings": sum(map(len, self.probe_groups)) if self.questions else 0,
                "eval_windows": len(self.windows), "scored_on": self.windows_label, "qa_pairs_scored": len(self.qa),
                "prompt_tokens_mean": sum(self.prompt_tokens) / len(self.prompt_tokens),
                "prompt_tokens_min": min(self.prompt_tokens), "prompt_tokens_max": max(self.prompt_tokens)}


def teacher_forced_scores(teacher_dir: Path, students, inputs: BenchInputs, threads: int) -> dict[str, dict]:
    """``quality.score`` of the teacher (through the runtime's torch backend) and of every
    measured artifact (through its own backend), one artifact loaded at a time."""
    from edgedistill.benchmarks import quality
    from edgedistill.runtime import load

    teacher_model = load(teacher_dir, backend="hf", threads=threads)
    scores = {"teacher": quality.score(teacher_model, teacher_model, inputs.windows, inputs.qa, teacher_model.vocab_size)}
    for target in students:
        if target.entry["missing"]:  # its server did not start: the same load would fail here
            continue
        model = load(target.path, threads=threads)
        vocab = min(model.vocab_size, teacher_model.vocab_size)
        scores[target.name] = quality.score(model, teacher_model, inputs.windows, inputs.qa, vocab)
        del model
    log(f"scored the teacher and {len(scores) - 1} artifacts teacher-forced on {inputs.windows_label}, "
        f"{len(inputs.qa)} QA pairs")
    return scores


def report_warnings(teacher, prices, threads: int) -> list[str]:
    """Warnings about the whole report rather than one model."""
    warnings = []
    if teacher.entry["missing"]:
        warnings.append(f"teacher {teacher.entry['served_by'] or 'API'} not measured: {teacher.entry['error']}; "
                        "its latency, answer and cost rows are missing")
    if prices.hardware_vcpus is not None and prices.hardware_vcpus != threads:
        warnings.append(f"students were measured on {threads} cores but are priced as '{prices.hardware_name}' with "
                        f"{prices.hardware_vcpus} vCPUs: pick a matching bench.hardware row or run the bench there")
    return warnings


def write_outputs(bench_dir: Path, results: dict, teacher, students, settings) -> None:
    """results.json, answers.jsonl, report.md, report.html and plots/ (inside the stage's
    temporary folder: the build moves them into place only when all are written)."""
    from edgedistill.benchmarks.report import write_report

    bench_dir.mkdir(parents=True)
    atomic_write_json(bench_dir / "results.json", results)
    write_answers(bench_dir / "answers.jsonl", teacher, students, settings)
    write_report(results, bench_dir)


def summary_rows(results: dict) -> list[dict]:
    """The manifest's per-artifact speed/size/retention/cost row (build summary table)."""
    keys = ("name", "format", "quantization", "bytes", "decode_tokens_per_s", "ttft_p50_s", "tpot_p50_s",
            "peak_rss_bytes", "retention", "usd_per_month", "warnings")
    return [{key: entry.get(key) for key in keys} for entry in results["artifacts"]]


def write_answers(path: Path, teacher, students, settings) -> None:
    """Every probe answer, per model and phrasing, for reading what the numbers summarize."""
    with open(path, "w", encoding="utf-8") as handle:
        for target in (teacher, *students):
            for phrasings, answers in zip(settings.probe_groups, target.entry.get("answers") or []):
                for prompt, answer in zip(phrasings, answers):
                    handle.write(json.dumps({"model": target.name, "prompt": prompt, **answer}, ensure_ascii=False) + "\n")
