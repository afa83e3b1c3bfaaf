"""``teacher: api``: the teacher is only the model behind ``teacher_api.url`` (a real
``edgedistill serve`` behind a proxy that fails every first attempt), the student is
independent, and no local teacher is loaded: checked by recording every model and
tokenizer the build loads, not assumed."""

from __future__ import annotations

import json

import pytest

from edgedistill import hf
from edgedistill.artifacts import read_manifest
from edgedistill.build import build
from edgedistill.cli import main
from edgedistill.recipe_loader import load_recipe
from tests.test_distill_modes import teacher_api  # noqa: F401 - the served tiny Llama behind a flaky proxy

FAST = ["teacher=api", "student=builtin:tiny-llama", "teacher_api.model=big-teacher", "bench.enabled=false",
        "export.onnx=[fp32]", "export.gguf=[f16]", "distill.steps=4", "distill.batch_size=4", "distill.temperature=1",
        "data.max_tokens=6000", "distill.prompt_tokens=16", "distill.response_tokens=24", "distill.sequence.windows=32"]


@pytest.fixture
def loaded(monkeypatch):
    """Every folder the build loads a torch model or a tokenizer from."""
    seen: list = []
    for name in ("load_model", "load_tokenizer"):
        original = getattr(hf, name)

        def recording(path, *args, _original=original, **kwargs):
            seen.append(path)
            return _original(path, *args, **kwargs)

        monkeypatch.setattr(hf, name, recording)
    return seen


def assert_only_the_students_were_loaded(seen: list, out) -> None:
    assert seen
    folders = {str(path.resolve()) for path in map(type(out), seen)}
    assert folders <= {str((out / name).resolve()) for name in ("student-init", "student")}, folders


@pytest.mark.slow
def test_an_api_only_build_distills_scores_from_the_api_without_a_local_teacher(teacher_api, tmp_path, loaded):
    out = tmp_path / "build"
    manifest = build(load_recipe("tiny", [*FAST, f"teacher_api.url={teacher_api}", "distill.teacher_topk=4"]), out)

    assert manifest["status"] == "complete"
    teacher = manifest["stages"]["teacher"]["artifact"]
    assert teacher["files"] == [] and teacher["payload"]["api"] == {"url": teacher_api, "model": "big-teacher"}
    assert not (out / "teacher").exists() and "prune" not in manifest["stages"]
    distill = manifest["stages"]["distill"]["artifact"]
    assert distill["payload"]["teacher_signal"] == "api_scores"
    assert distill["metrics"]["teacher_topk_aligned_share"] == 1.0  # the served model shares the student's tokenizer
    assert_only_the_students_were_loaded(loaded, out)


@pytest.mark.slow
def test_a_chat_teacher_behind_an_api_trains_the_student_on_its_answers_in_the_students_template(tmp_path, loaded,
                                                                                                tiny_llama_dir):
    from edgedistill.exporters.gguf import export_gguf
    from tests.runtime.server_process import running_server

    gguf = tmp_path / "teacher.gguf"
    export_gguf(tiny_llama_dir, gguf, "f32")
    out = tmp_path / "build"
    with running_server(gguf, "--model-name", "big-teacher", "--chat-template", "chatml") as server:
        sets = [*FAST, f"teacher_api.url={server.url}/v1", "teacher_api.mode=chat", "distill.mode=sequence",
                "data.chat_template=chatml"]
        manifest = build(load_recipe("tiny", sets), out)

    assert manifest["status"] == "complete"
    (responses,) = (out / "teacher-responses").glob("*.jsonl")
    rows = [json.loads(line) for line in responses.read_text().splitlines()]
    assert len(rows) == 32 and all(row["messages"][0]["role"] == "user" for row in rows)
    metrics = manifest["stages"]["distill"]["artifact"]["metrics"]
    assert metrics["teacher_responses_kept"] > 0 and metrics["sequence_train_windows"] > 0
    assert (out / "student" / "tokenizer_config.json").is_file()
    assert_only_the_students_were_loaded(loaded, out)


def test_chat_examples_target_the_assistant_turn_only(tiny_llama_dir):
    from edgedistill.hf import load_tokenizer
    from edgedistill.pipeline.distill.sequence import as_chat, chat_example

    tokenizer = load_tokenizer(tiny_llama_dir)
    row = {**as_chat({"prompt": "What is a list?"}), "response": "A mutable sequence."}
    example = chat_example(row, tokenizer, "chatml")

    answer = tokenizer.decode([t for t, target in zip(example.ids, example.targets) if target])
    context = tokenizer.decode([t for t, target in zip(example.ids, example.targets) if not target])
    assert "A mutable sequence." in answer and "What is a list?" not in answer
    assert "What is a list?" in context and "user" in context
    assert not example.aligned and all(dist is None for dist in example.dists)


@pytest.mark.slow
def test_an_api_of_another_tokenizer_is_refused_by_the_aligned_share_floor(teacher_api, tmp_path, capsys):
    from edgedistill.demo.tiny import TOKENIZER_VOCAB_SIZE, build_tiny_teacher, train_tokenizer
    from edgedistill.data import load_documents

    # same size, other merges (trained on the docs corpus): the ids we send name other tokens behind the API
    student = build_tiny_teacher("tiny-llama", tmp_path / "other", seed=3)
    train_tokenizer(load_documents("builtin:pydocs")[:300], TOKENIZER_VOCAB_SIZE).save_pretrained(student)
    sets = [*FAST, f"student={student}", f"teacher_api.url={teacher_api}", "distill.teacher_topk=4"]
    code = main(["build", "tiny", "--out", str(tmp_path / "b"), *[a for s in sets for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert code == 2 and "the API's tokenizer is not the student's" in err and "Traceback" not in err
    assert "distill" not in read_manifest(tmp_path / "b")["stages"]


@pytest.mark.parametrize("sets, message", [
    (["teacher=api", "student=builtin:tiny-llama", "bench.enabled=false"], "teacher: api distills from teacher_api.url"),
    (["teacher=api", "teacher_api.url=http://127.0.0.1:9/v1", "bench.enabled=false"], "has no local weights to prune"),
    (["teacher=api", "teacher_api.url=http://127.0.0.1:9/v1", "student=builtin:tiny-llama"], "set bench.enabled=false"),
    (["teacher_api.url=http://127.0.0.1:9/v1", "teacher_api.mode=chat", "distill.teacher_topk=4"],
     "set teacher_api.mode=completions or distill.mode=sequence"),
    (["prune.student=true"], "prune.student prunes an independent student, but student is prune"),
    (["distill.teacher_api=http://127.0.0.1:9/v1"], "recipe key 'distill.teacher_api' has moved to 'teacher_api.url'"),
    (["bench.teacher_model=x"], "has moved to 'teacher_api.model'"),
    (["distill.sequence_topk=4"], "has moved to 'distill.sequence.topk'"),
    (["distill.lmbda=0.3"], "has moved to 'distill.on_policy.lmbda'"),
    (["prune.layers_keep=0.5"], "has moved to 'prune.ratios.layers'"),
    (["bench.requests_per_day=5"], "has moved to 'bench.cost.requests_per_day'"),
])
def test_api_teacher_misuse_and_moved_keys_are_refused_in_one_line(tmp_path, capsys, sets, message):
    code = main(["build", "tiny", "--out", str(tmp_path / "b"), *[a for s in sets for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "b").exists()
