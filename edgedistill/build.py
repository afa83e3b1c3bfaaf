"""The orchestrator: chains the stages, caches their outputs, keeps the manifest.

A stage's output is reused when the manifest holds a record with the same key (hash of
its config, its input artifact and the package version) and its files are intact, so a
rerun is all "cached" and a killed build resumes at the stage it was in. Each stage
writes into a temporary folder inside the build folder; its outputs are renamed into
place and only then is its manifest record written.
"""

from __future__ import annotations

import importlib
import math
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgedistill.artifacts import MANIFEST_NAME, Artifact, atomic_write_json, is_under, new_manifest, read_manifest, stage_key
from edgedistill.config import Recipe, to_dict
from edgedistill.preflight import preflight
from edgedistill.processes import Processes, current
from edgedistill.stage_context import StageContext

TEMP_PREFIX = ".tmp-"
STATE_FOLDER = ".state"


@dataclass(frozen=True)
class Stage:
    name: str
    module: str  # exposes OUTPUTS (and SHARED_FOLDERS) and run(cfg, inp, ctx: StageContext) -> Artifact
    config: Callable[[Recipe, dict], dict]  # everything the stage's output depends on
    enabled: Callable[[Recipe], bool] = lambda recipe: True
    # settings passed to run() that do not change its output, so not in the key (checkpoints)
    extras: Callable[[Recipe], dict] = lambda recipe: {}


STAGES: tuple[Stage, ...] = (
    Stage("teacher", "edgedistill.pipeline.teacher",
          lambda r, pre: {"teacher": r.teacher, "seed": r.seed, "source": pre["teacher_source"],
                          **({"teacher_api": r.teacher_api} if r.teacher == "api" else {})}),
    Stage("student", "edgedistill.pipeline.student",
          lambda r, pre: {"student": r.student, "seed": r.seed, "source": pre["student_source"]},
          lambda r: r.student != "prune"),
    Stage("prune", "edgedistill.pipeline.prune",
          lambda r, pre: {"prune": r.prune, "data": r.data, "data_content": pre["data_content"], "seed": r.seed},
          lambda r: r.student == "prune" or r.prune.student),
    Stage("distill", "edgedistill.pipeline.distill",
          lambda r, pre: {"distill": r.distill, "data": r.data, "data_content": pre["data_content"], "seed": r.seed,
                          "recipe_name": r.name, "prompts_content": pre["prompts_content"],
                          "teacher_api": r.teacher_api if r.teacher_api.for_distill else None},
          extras=lambda r: {"checkpoint": r.checkpoint}),
    Stage("export", "edgedistill.pipeline.export",
          lambda r, pre: {"export": r.export, "calibration": r.export.calibration or r.data.path,
                          "calibration_content": pre["calibration_content"]}),
    Stage("verify", "edgedistill.pipeline.verify", lambda r, pre: {"verify": r.verify}),
    Stage("bench", "edgedistill.pipeline.bench",
          lambda r, pre: {"bench": r.bench, "seq_len": r.data.seq_len, "data": r.data, "seed": r.seed,
                          "teacher_api": r.teacher_api if r.teacher_api.url else None,
                          "data_content": pre["data_content"], "eval_content": pre["eval_content"], "recipe_name": r.name},
          lambda r: r.bench.enabled),
)


def plan(recipe: Recipe, out_dir: Path, pre: dict) -> list[tuple[str, str]]:
    """(stage, "cached" | "run" | "skip") without running anything, for ``--dry-run``;
    ``pre`` is :func:`preflight`'s result."""
    manifest = read_manifest(out_dir) or {"stages": {}}
    rows, artifact, reusable = [], None, True
    for stage in STAGES:
        if not stage.enabled(recipe):
            rows.append((stage.name, "skip"))
            continue
        cached = _lookup(stage, recipe, pre, artifact, manifest, out_dir)[2] if reusable else None
        reusable = cached is not None
        artifact = cached
        rows.append((stage.name, "cached" if cached else "run"))
    return rows


def check_build_folder(out_dir: Path) -> None:
    """Refuse a non-empty folder that is not a build folder: stages replace their outputs."""
    from edgedistill.errors import UserError

    foreign = out_dir.is_dir() and any(out_dir.iterdir()) and read_manifest(out_dir) is None
    if out_dir.is_file() or foreign:
        raise UserError(f"--out {out_dir} exists and is not an edgedistill build folder; choose a new or empty folder")


def _lookup(stage: Stage, recipe: Recipe, pre: dict, inp: Artifact | None, manifest: dict,
            out_dir: Path) -> tuple[Any, str, Artifact | None]:
    """A stage's config, its key (the config and its input's hash) and its recorded output
    when that key matches: what ``plan`` reports and ``build`` reuses, computed one way."""
    cfg = stage.config(recipe, pre)
    key = stage_key(stage.name, to_dict(cfg), inp.hash if inp else "")
    return cfg, key, _cached_artifact(stage.name, key, inp, manifest, out_dir)


def _cached_artifact(name: str, key: str, inp: Artifact | None, manifest: dict, out_dir: Path) -> Artifact | None:
    """The recorded output of stage ``name`` if its key matches and its files are intact."""
    record = manifest["stages"].get(name)
    if not record or record["key"] != key:
        return None
    if record["artifact"]["payload"].get("retry"):  # e.g. a bench whose teacher API was down: measure again
        return None
    artifact = Artifact.from_record(name, record["artifact"], out_dir, inp)
    return None if artifact.file_problems() else artifact


def state_dir(out_dir: Path, stage: str, key: str) -> Path:
    """Where a resumable stage keeps checkpoints between runs with the same key."""
    return out_dir / STATE_FOLDER / f"{stage}-{key[:16]}"


def _run_stage(stage: Stage, cfg: dict, inp: Artifact | None, out_dir: Path, key: str, extras: dict,
               keep_outputs: bool = True) -> Artifact:
    """Run one stage into a temporary folder and move its outputs into place. A resumable
    stage (``RESUMABLE = True``) also gets a state folder that survives a kill and is
    removed once the stage has finished. ``keep_outputs=False`` (a helper process of a
    multi-process launch) runs the stage and discards what it wrote."""
    module = importlib.import_module(stage.module)
    temp = out_dir / f"{TEMP_PREFIX}{stage.name}-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    resumable = getattr(module, "RESUMABLE", False)
    state = state_dir(out_dir, stage.name, key)
    shared = tuple(getattr(module, "SHARED_FOLDERS", ()))
    before = {entry.name for entry in out_dir.iterdir()}
    try:
        artifact = module.run(cfg, inp, StageContext(temp, out_dir, state, shared, current(), extras))
        # every process of a multi-process launch has a temporary folder of its own here, and a helper process
        # may finish after the main one has already moved the stage's outputs into place
        allowed = {*shared, STATE_FOLDER, *(() if keep_outputs else module.OUTPUTS)}
        undeclared = {entry.name for entry in out_dir.iterdir() if not entry.name.startswith(TEMP_PREFIX)} - before - allowed
        if undeclared:  # a bug in the stage, not the user's input: its outputs must not land
            raise RuntimeError(f"stage {stage.name} wrote {sorted(undeclared)} into the build folder outside its "
                               "outputs and SHARED_FOLDERS")
        if not keep_outputs:
            return artifact
        _remove_outputs(module.OUTPUTS, out_dir)
        for name in module.OUTPUTS:
            if (temp / name).exists():
                (temp / name).rename(out_dir / name)
        artifact = artifact.relocated(out_dir) if artifact.root == temp else artifact
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    if resumable:
        shutil.rmtree(state, ignore_errors=True)
        for other in state.parent.glob(f"{stage.name}-*"):  # checkpoints of configurations since replaced
            shutil.rmtree(other, ignore_errors=True)
    return artifact


def _remove_outputs(names: tuple[str, ...], out_dir: Path) -> None:
    for name in names:
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def build(recipe: Recipe, out_dir: Path, on_stage: Callable[[str, str, float], None] = lambda *a: None,
          force: frozenset[str] = frozenset()) -> dict:
    """Run (or reuse) every stage into ``out_dir``; returns the final manifest.

    ``on_stage(name, status, seconds)`` is called after each stage with status "cached",
    "ran" or "skip". Stages named in ``force`` run even when cached (``edgedistill bench``
    measures again).
    """
    procs = current()
    if not procs.main:
        on_stage = lambda *a: None  # noqa: E731 - the main process reports
    pre, manifest = _start(recipe, out_dir, procs)
    artifact: Artifact | None = None
    for stage in STAGES:
        if not stage.enabled(recipe):
            if procs.main:
                manifest["stages"].pop(stage.name, None)
                _remove_outputs(importlib.import_module(stage.module).OUTPUTS, out_dir)  # no stale results
            on_stage(stage.name, "skip", 0.0)
            continue
        artifact = _run_or_reuse(stage, recipe, pre, artifact, manifest, out_dir, on_stage, procs, stage.name in force)
    if procs.main:
        manifest = _finish(manifest, out_dir)
    procs.barrier()
    return manifest if procs.main else read_manifest(out_dir)


def _start(recipe: Recipe, out_dir: Path, procs: Processes = Processes()) -> tuple[dict, dict]:
    """Preflight, claim the build folder and open its manifest: (preflight result, manifest).
    Helper processes of a multi-process launch wait for the main one and read its manifest."""
    from edgedistill.benchmarks.machine import package_versions

    pre = preflight(recipe)
    if not procs.main:
        procs.barrier()
        return pre, read_manifest(out_dir)
    check_build_folder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for leftover in out_dir.glob(f"{TEMP_PREFIX}*"):  # from a killed run
        shutil.rmtree(leftover, ignore_errors=True)
    manifest = read_manifest(out_dir) or new_manifest(to_dict(recipe), package_versions())
    manifest.update(status="incomplete", recipe=to_dict(recipe), versions=package_versions())
    atomic_write_json(out_dir / MANIFEST_NAME, manifest)
    procs.barrier()
    return pre, manifest


def _run_or_reuse(stage: Stage, recipe: Recipe, pre: dict, artifact: Artifact | None, manifest: dict, out_dir: Path,
                  on_stage: Callable[[str, str, float], None], procs: Processes = Processes(),
                  force: bool = False) -> Artifact:
    """The stage's cached output when its key matches, else run it and record it.

    Under a multi-process launch the main process runs the stage (all processes run a
    resumable one, the distill stage, and only the main one keeps its outputs); the
    others wait and take the main process's record."""
    inp = artifact
    input_hash = inp.hash if inp else ""
    cfg, key, cached = _lookup(stage, recipe, pre, inp, manifest, out_dir)
    if cached is not None and not force:
        on_stage(stage.name, "cached", manifest["stages"][stage.name]["seconds"])
        return cached
    everyone = getattr(importlib.import_module(stage.module), "RESUMABLE", False)
    if procs.main or everyone:
        started = time.perf_counter()
        artifact = _run_stage(stage, cfg, inp, out_dir, key, stage.extras(recipe), keep_outputs=procs.main)
        seconds = time.perf_counter() - started
    if procs.main:
        manifest["stages"][stage.name] = {
            "config": to_dict(cfg), "key": key, "input_hash": input_hash, "seconds": seconds,
            "artifact": artifact.to_record(out_dir),
        }
        atomic_write_json(out_dir / MANIFEST_NAME, manifest)  # the record comes after the outputs
        on_stage(stage.name, "ran", seconds)
    procs.barrier()
    if not procs.main:
        manifest.clear()
        manifest.update(read_manifest(out_dir))
        artifact = Artifact.from_record(stage.name, manifest["stages"][stage.name]["artifact"], out_dir, inp)
    return artifact


def cache_teacher(recipe: Recipe, out_dir: Path, on_stage: Callable[[str, str, float], None] = lambda *a: None):
    """Run (or reuse) the teacher stage and write the top-k teacher cache that the distill
    stage of this recipe will read (``distill.teacher_topk`` > 0) into ``out_dir``.
    Returns the :class:`TeacherCache`."""
    from edgedistill.errors import UserError
    from edgedistill.hf import load_tokenizer
    from edgedistill.data import packed_examples
    from edgedistill.pipeline.distill.teacher_signals import CACHE_FOLDER, ensure_teacher_cache, teacher_vocab_rows

    if recipe.teacher_api.for_distill:
        raise UserError("teacher_api.url is set: the build scores the windows through the API itself; "
                        "run `edgedistill build`")
    if recipe.distill.teacher_topk <= 0:
        raise UserError("distill.teacher_topk is 0 (online teacher); set it, e.g. --set distill.teacher_topk=64")
    pre, manifest = _start(recipe, out_dir)
    teacher = _run_or_reuse(STAGES[0], recipe, pre, None, manifest, out_dir, on_stage)
    tokenizer = load_tokenizer(teacher.model_dir)
    train, heldout = packed_examples(recipe.data, tokenizer, recipe.seed)
    return ensure_teacher_cache(teacher, train, heldout, recipe.distill, teacher_vocab_rows(teacher.model_dir),
                                out_dir / CACHE_FOLDER)


def _finish(manifest: dict, out_dir: Path) -> dict:
    manifest["artifacts"] = compose_artifacts(manifest)
    manifest["metrics"] = collect_metrics(manifest)
    ready = all(a["device_ready"] for a in manifest["artifacts"])
    manifest["status"] = "complete" if ready else "failed_verification"
    atomic_write_json(out_dir / MANIFEST_NAME, manifest)
    return manifest


def compose_artifacts(manifest: dict) -> list[dict]:
    """One entry per exported artifact: format, quantization, path, files, parity, speed."""
    stages = manifest["stages"]
    export = stages["export"]["artifact"]
    parity = stages.get("verify", {}).get("artifact", {}).get("payload", {}).get("results", {})
    speed = {row["name"]: row for row in stages.get("bench", {}).get("artifact", {}).get("payload", {}).get("artifacts", [])}
    entries = []
    for entry in export["payload"]["exports"]:
        files = [f for f in export["files"] if is_under(f["path"], entry["path"])]
        result = parity.get(entry["name"])
        entries.append({
            **{key: entry[key] for key in ("name", "format", "quantization", "path", "facts")},
            "bytes": sum(f["bytes"] for f in files),
            "files": files,
            "parity": result,
            "device_ready": bool(result and result["device_ready"]),
            "reason": None if result is None or result["device_ready"] else "; ".join(result["failures"]),
            "decode_tokens_per_s": speed.get(entry["name"], {}).get("decode_tokens_per_s"),
        })
        if result is None:
            entries[-1]["reason"] = "not verified"
    return entries


def collect_metrics(manifest: dict) -> dict:
    """Every stage's numeric metrics plus ``build_seconds`` (sum of stage compute time)."""
    metrics: dict = {}
    for record in manifest["stages"].values():
        metrics.update({k: v for k, v in record["artifact"]["metrics"].items()
                        if isinstance(v, (int, float)) and math.isfinite(v)})
    metrics["build_seconds"] = sum(record["seconds"] for record in manifest["stages"].values())
    return metrics


def load_chain(out_dir: Path) -> tuple[dict, dict[str, Artifact]]:
    """The manifest of a build folder and its stage artifacts, linked parent to child."""
    from edgedistill.errors import UserError

    manifest = read_manifest(out_dir)
    if manifest is None:
        raise UserError(f"{out_dir} has no readable {MANIFEST_NAME}; pass a folder written by `edgedistill build`")
    artifacts: dict[str, Artifact] = {}
    parent = None
    for stage in STAGES:
        record = manifest["stages"].get(stage.name)
        if record is not None:
            parent = artifacts[stage.name] = Artifact.from_record(stage.name, record["artifact"], out_dir, parent)
    return manifest, artifacts


def reverify(out_dir: Path) -> tuple[list[str], dict[str, dict]]:
    """Re-hash every recorded file and re-run the parity gate on every exported artifact.

    Returns (integrity problems, artifact name -> fresh parity result).
    """
    from edgedistill.recipe_loader import from_dict
    from edgedistill.errors import UserError
    from edgedistill.pipeline.verify import verify_exports

    manifest, artifacts = load_chain(out_dir)
    problems = [f"{name}: {p}" for name, art in artifacts.items() for p in art.file_problems(full_hash=True)]
    if "export" not in artifacts or "distill" not in artifacts:
        raise UserError(f"{out_dir} has no exported artifacts yet; run `edgedistill build` to finish it")
    if problems:
        return problems, {}
    recipe = from_dict(Recipe, manifest["recipe"])
    return problems, verify_exports(artifacts["export"], recipe.verify)
