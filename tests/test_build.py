import dataclasses
import json

import pytest

from edgedistill.artifacts import read_manifest
from edgedistill.build import STAGES, build, plan
from edgedistill.exporters.formats import GGUF_QUANTIZATIONS, LOSSLESS_FP32
from edgedistill.pipeline.distill.trainer import Trainer
from edgedistill.preflight import preflight
from edgedistill.recipe_loader import load_recipe

FAST = ["distill.steps=5", "bench.repeats=1", "bench.decode_tokens=8", "export.onnx=[]", "bench.probe_questions=2",
        "bench.latency_prompts=2", "bench.answer_tokens=8", "bench.artifact_eval_windows=2"]


def record_stages(log):
    return lambda name, status, _seconds: log.append((name, status))


@pytest.mark.slow
def test_rerun_is_cached_and_a_config_change_reruns_only_downstream(tmp_path):
    log = []
    build(load_recipe("tiny", FAST), tmp_path, record_stages(log))
    first = read_manifest(tmp_path)
    log.clear()

    build(load_recipe("tiny", FAST), tmp_path, record_stages(log))
    assert log == [(stage.name, "skip" if stage.name == "student" else "cached") for stage in STAGES]
    assert read_manifest(tmp_path)["stages"] == first["stages"]

    log.clear()  # checkpoint settings change how a run is saved, not what it produces
    build(load_recipe("tiny", FAST + ["checkpoint.every=3", "checkpoint.keep=5"]), tmp_path, record_stages(log))
    assert log == [(stage.name, "skip" if stage.name == "student" else "cached") for stage in STAGES]

    log.clear()
    build(load_recipe("tiny", FAST + ["distill.alpha=0.9"]), tmp_path, record_stages(log))
    assert log == [("teacher", "cached"), ("student", "skip"), ("prune", "cached"), ("distill", "ran"), ("export", "ran"),
                   ("verify", "ran"), ("bench", "ran")]

    log.clear()
    build(load_recipe("tiny", FAST + ["distill.alpha=0.9", "bench.enabled=false"]), tmp_path, record_stages(log))
    assert log[-1] == ("bench", "skip")
    assert "bench" not in read_manifest(tmp_path)["stages"] and not (tmp_path / "bench").exists()


@pytest.mark.slow
def test_edited_data_is_not_mistaken_for_cached_data(tmp_path):
    from edgedistill.demo.tiny import TINY_CORPUS

    data = tmp_path / "data.txt"
    data.write_text(TINY_CORPUS.read_text()[:40000])
    recipe = load_recipe("tiny", FAST + [f"data.path={data}", "bench.enabled=false"])
    build(recipe, tmp_path / "out")
    data.write_text(TINY_CORPUS.read_text()[40000:80000])
    log = []

    build(recipe, tmp_path / "out", record_stages(log))

    assert log[:4] == [("teacher", "cached"), ("student", "skip"), ("prune", "ran"), ("distill", "ran")]


@pytest.mark.slow
def test_a_build_killed_mid_stage_resumes_there(tmp_path, monkeypatch):
    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", killed)
    with pytest.raises(KeyboardInterrupt):
        build(load_recipe("tiny", FAST), tmp_path)

    manifest = read_manifest(tmp_path)
    assert manifest["status"] == "incomplete"
    assert set(manifest["stages"]) == {"teacher", "prune"}
    assert not list(tmp_path.glob(".tmp-*")) and not (tmp_path / "student").exists()

    monkeypatch.undo()
    log = []
    recipe = load_recipe("tiny", FAST)
    assert plan(recipe, tmp_path, preflight(recipe))[:4] == [("teacher", "cached"), ("student", "skip"), ("prune", "cached"),
                                                             ("distill", "run")]
    build(load_recipe("tiny", FAST), tmp_path, record_stages(log))
    assert log[:4] == [("teacher", "cached"), ("student", "skip"), ("prune", "cached"), ("distill", "ran")]
    assert read_manifest(tmp_path)["status"] == "complete"


@pytest.mark.slow
def test_a_missing_output_file_invalidates_its_stage(tmp_path):
    build(load_recipe("tiny", FAST), tmp_path)
    (tmp_path / "gguf" / "student-f16.gguf").unlink()
    log = []

    build(load_recipe("tiny", FAST), tmp_path, record_stages(log))

    assert ("export", "ran") in log and ("distill", "cached") in log
    assert (tmp_path / "gguf" / "student-f16.gguf").is_file()


@pytest.mark.slow
def test_a_failing_artifact_is_recorded_not_shipped(tmp_path, monkeypatch):
    # Hold q4_0 to the lossless gate, which 4-bit weights cannot meet.
    strict = dataclasses.replace(GGUF_QUANTIZATIONS["q4_0"], thresholds=LOSSLESS_FP32)
    monkeypatch.setitem(GGUF_QUANTIZATIONS, "q4_0", strict)

    manifest = build(load_recipe("tiny", FAST + ["export.gguf=[f16, q4_0]"]), tmp_path)

    entries = {a["name"]: a for a in manifest["artifacts"]}
    assert manifest["status"] == "failed_verification"
    assert entries["gguf-f16"]["device_ready"] is True
    assert entries["gguf-q4_0"]["device_ready"] is False
    assert "max |dlogit|" in entries["gguf-q4_0"]["reason"]
    assert entries["gguf-q4_0"]["facts"]["tensor_types"]["q4_0"] > 0
    assert json.loads((tmp_path / "manifest.json").read_text())["status"] == "failed_verification"


@pytest.mark.slow
def test_qwen2_teacher_builds_end_to_end(tmp_path):
    manifest = build(load_recipe("tiny", FAST + ["teacher=builtin:tiny-qwen2", "export.onnx=[fp32]", "distill.objective=jsd",
                                                 "distill.beta=0.3"]), tmp_path)

    entries = {a["name"]: a for a in manifest["artifacts"]}
    assert manifest["status"] == "complete"
    assert entries["gguf-f16"]["facts"]["gguf_arch"] == "qwen2"
    assert entries["onnx-fp32"]["parity"]["greedy_match"] is True
    assert manifest["metrics"]["student_params"] < manifest["metrics"]["teacher_params"]
    card = (tmp_path / "student" / "README.md").read_text()
    assert "loss = alpha * T^2 * jsd(beta=0.3) at T = 2 + (1 - alpha) * CE" in card


def test_a_student_distilled_on_chat_rows_ships_the_template_it_was_trained_with(tmp_path):
    from edgedistill.demo.tiny import TINY_CORPUS
    from edgedistill.runtime import load
    from edgedistill.runtime.chat import CHATML_TEMPLATE

    lines = [line for line in TINY_CORPUS.read_text().splitlines() if line.strip()]
    rows = [{"messages": [{"role": "user", "content": lines[i]}, {"role": "assistant", "content": lines[i + 1]}]}
            for i in range(0, len(lines) - 1, 2)]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))

    manifest = build(load_recipe("tiny", FAST + [f"data.path={data}", "data.chat_template=chatml", "export.onnx=[fp32]"]),
                     tmp_path / "out")

    assert manifest["status"] == "complete"
    assert (tmp_path / "out" / "student" / "chat_template.jinja").read_text() == CHATML_TEMPLATE
    for artifact in ("gguf/student-f16.gguf", "onnx/fp32"):
        model = load(tmp_path / "out" / artifact)
        assert model.chat_template.source == CHATML_TEMPLATE, artifact
        assert model.prepare([{"role": "user", "content": "hi"}]).stops == ("<|im_end|>",), artifact
