"""The embedded default recipe, run end to end on a small budget (real teacher, real data)."""

from __future__ import annotations

import json
import math

import pytest

from edgedistill.build import build
from edgedistill.recipe_loader import load_recipe

REQUIRED_METRICS = (
    "teacher_params", "student_params", "teacher_test_ppl", "student_test_ppl", "teacher_test_top1",
    "student_test_top1", "student_teacher_top1_agreement", "student_teacher_kl", "retention_top1", "build_seconds",
    "teacher_qa_top1", "student_qa_top1", "teacher_qa_ppl", "student_qa_ppl", "retention_qa_top1",
)
QUICK = [
    "distill.steps=4", "distill.warmup_steps=1", "data.max_tokens=40000", "prune.calibration_sequences=4",
    "export.onnx=[]", "export.gguf=[f16]", "bench.repeats=1", "bench.decode_tokens=16", "bench.eval_windows=2",
    "bench.qa_pairs=6", "bench.probe_questions=2", "bench.latency_prompts=2", "bench.answer_tokens=16",
    "bench.artifact_eval_windows=2", "bench.artifact_qa_pairs=4",
]


def test_docs_assistant_is_the_default_recipe():
    from edgedistill.cli import DEFAULT_RECIPE

    recipe = load_recipe(None, [], default=DEFAULT_RECIPE)
    assert recipe.name == "docs-assistant" and recipe.teacher == "builtin:pydocs-teacher"
    assert recipe.data.path == "builtin:pydocs" and recipe.bench.eval_path == "builtin:pydocs-test"


@pytest.mark.slow
def test_docs_assistant_builds_a_quarter_size_student_with_every_metric(tmp_path):
    manifest = build(load_recipe("docs-assistant", QUICK), tmp_path)

    assert manifest["status"] == "complete"
    metrics = manifest["metrics"]
    for key in REQUIRED_METRICS:
        assert isinstance(metrics.get(key), (int, float)) and math.isfinite(metrics[key]), key
    assert 0.2 <= metrics["student_params"] / metrics["teacher_params"] <= 0.3
    assert metrics["retention_top1"] == pytest.approx(metrics["student_test_top1"] / metrics["teacher_test_top1"])
    student = json.loads((tmp_path / "student" / "config.json").read_text(encoding="utf-8"))
    assert (student["hidden_size"], student["intermediate_size"], student["num_hidden_layers"]) == (256, 768, 4)
    assert metrics["teacher_test_ppl"] < metrics["student_test_ppl"]  # 4 distillation steps cannot catch up
    quality = json.loads((tmp_path / "bench" / "results.json").read_text(encoding="utf-8"))["quality_torch"]
    assert quality["qa_pairs"] == 6 and quality["test_tokens"] == 2 * 511


def test_default_dry_run_plans_the_quarter_size_student(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "edgedistill.cli", "build", "--dry-run", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "name: docs-assistant" in result.stdout
    assert "hidden 512 -> 256, mlp 1536 -> 768, kv heads 2 -> 2, layers 6 -> 4" in result.stdout
    assert not (tmp_path / "out").exists()
