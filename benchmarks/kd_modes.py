"""Logit vs sequence-level vs on-policy KD at equal training compute, on one recipe.

    python -m benchmarks.kd_modes [RECIPE] --steps 200 --out DIR [--set KEY=VALUE ...]
        [--mode-set on_policy:distill.objective=jsd] [--modes logit sequence on_policy] [--json]

Each mode builds the recipe (teacher, prune, distill; one GGUF f16 export for the parity
gate; no bench) into ``DIR/<name>`` with the same student shape, optimizer steps, batch
size and learning-rate schedule, then scores the student the way the build's bench stage
does (``pipeline/evaluate.quality_report``: test windows and the QA set, fp32, against the
full teacher). "Equal compute" means equal optimizer steps of equal batch size; what each
mode spends besides (the teacher generating responses, the student sampling) is in the
wall-clock columns, measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from math import nan
from pathlib import Path

MODES = ("logit", "sequence", "on_policy")


def run_mode(recipe_name: str, name: str, mode: str, steps: int, out: Path, overrides: list[str]) -> dict:
    from edgedistill.build import build
    from edgedistill.recipe_loader import load_recipe
    from edgedistill.pipeline.bench import evaluate_quality

    sets = [*overrides, f"distill.mode={mode}", f"distill.steps={steps}", "bench.enabled=false", "export.onnx=[]",
            "export.gguf=[f16]"]
    recipe = load_recipe(recipe_name, sets)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    manifest = build(recipe, out / name, lambda stage, status, took: seconds.__setitem__(stage, took))
    wall = time.perf_counter() - started
    from edgedistill.artifacts import Artifact

    artifact = None
    for stage in ("teacher", "prune", "distill"):  # the chain evaluate_quality walks to find the teacher
        artifact = Artifact.from_record(stage, manifest["stages"][stage]["artifact"], out / name, artifact)
    distill = manifest["stages"]["distill"]["artifact"]
    quality = evaluate_quality(recipe.bench, recipe.data.seq_len, artifact)
    log = [json.loads(line) for line in (out / name / "student" / "train_log.jsonl").read_text().splitlines()]
    return {"mode": name, "distill_s": seconds.get("distill"), "wall_s": wall, "distill": distill["metrics"],
            "quality": quality, "target_tokens": sum(row["tokens"] for row in log), "recipe_overrides": sets}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default="docs-assistant")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--modes", nargs="+", default=list(MODES),
                        help="modes to run, each MODE or NAME=MODE (a variant with its own --mode-set NAME:...)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override for every mode")
    parser.add_argument("--mode-set", action="append", default=[], help="MODE:KEY=VALUE, an override for one mode")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = []
    for item in args.modes:
        name, _, mode = item.partition("=")
        if (mode or name) not in MODES:
            parser.error(f"--modes {item}: the mode must be one of {', '.join(MODES)}")
        extra = [entry.split(":", 1)[1] for entry in args.mode_set if entry.split(":", 1)[0] == name]
        results.append(run_mode(args.recipe, name, mode or name, args.steps, args.out, [*args.overrides, *extra]))
        print(f"{name}: done in {results[-1]['wall_s']:.0f}s", file=sys.stderr, flush=True)
    (args.out / "kd_modes.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print("| mode | distill s | target tokens | held-out ppl | held-out agreement | test ppl | test top-1 | "
          "test agreement | KL(t || s) | QA top-1 | QA retention |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        d, q = r["distill"], r["quality"]
        print(f"| {r['mode']} | {r['distill_s']:.0f} | {r['target_tokens']:,} | {d['student_val_ppl']:.2f} | "
              f"{d['student_teacher_val_top1_agreement']:.4f} | {q.get('student_test_ppl', nan):.2f} | "
              f"{q.get('student_test_top1', nan):.4f} | {q.get('student_teacher_top1_agreement', nan):.4f} | "
              f"{q.get('student_teacher_kl', nan):.4f} | {q.get('student_qa_top1', nan):.4f} | "
              f"{q.get('retention_qa_top1', nan):.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
