import hashlib
import json

import pytest

from edgedistill import __version__
from edgedistill.artifacts import Artifact, atomic_write_json, atomic_write_text, record_files, sha256_json, stage_key


def test_stage_key_depends_on_config_input_and_version(monkeypatch):
    base = stage_key("prune", {"target": 0.5}, "abc")

    assert stage_key("prune", {"target": 0.5}, "abc") == base
    assert stage_key("prune", {"target": 0.4}, "abc") != base
    assert stage_key("prune", {"target": 0.5}, "abd") != base
    assert stage_key("distill", {"target": 0.5}, "abc") != base
    monkeypatch.setattr("edgedistill.artifacts.__version__", __version__ + ".post1")
    assert stage_key("prune", {"target": 0.5}, "abc") != base


def test_sha256_json_ignores_key_order():
    assert sha256_json({"a": 1, "b": [1, 2]}) == sha256_json({"b": [1, 2], "a": 1})


def test_record_files_hashes_and_sizes(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.bin").write_bytes(b"\x00\x01weights")
    (tmp_path / "model" / "config.json").write_text("{}")

    records = record_files(tmp_path, ["model"])

    assert [r.path for r in records] == ["model/config.json", "model/w.bin"]
    assert records[1].sha256 == hashlib.sha256(b"\x00\x01weights").hexdigest()
    assert records[1].bytes == 9


def test_file_problems_names_missing_resized_and_changed_files(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / name).write_text("12345")
    artifact = Artifact("x", tmp_path, record_files(tmp_path, ["a", "b", "c"]))
    (tmp_path / "a").unlink()
    (tmp_path / "b").write_text("123")
    (tmp_path / "c").write_text("54321")

    problems = artifact.file_problems(full_hash=True)

    assert problems == ["a: missing", "b: 3 bytes, expected 5", "c: sha256 differs from the manifest"]
    assert artifact.file_problems() == ["a: missing", "b: 3 bytes, expected 5"]


def test_artifact_record_round_trip_inside_and_outside_the_build(tmp_path):
    build_dir, outside = tmp_path / "build", tmp_path / "teacher"
    (build_dir / "student").mkdir(parents=True)
    (build_dir / "student" / "w").write_text("w")
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    teacher = Artifact("teacher", outside, record_files(outside, ["config.json"]), {"model_dir": "."}, {"teacher_params": 3})
    student = Artifact("distill", build_dir, record_files(build_dir, ["student"]), {"model_dir": "student"}, {}, teacher)

    teacher_record, student_record = teacher.to_record(build_dir), student.to_record(build_dir)
    restored_teacher = Artifact.from_record("teacher", teacher_record, build_dir, None)
    restored = Artifact.from_record("distill", student_record, build_dir, restored_teacher)

    assert teacher_record["root"] == str(outside.resolve())
    assert student_record["root"] == "."
    assert restored.hash == student.hash
    assert restored.find("teacher").model_dir == outside
    assert restored.model_dir == build_dir / "student"
    with pytest.raises(KeyError):
        restored.find("bench")


def test_artifact_hash_changes_with_content(tmp_path):
    (tmp_path / "f").write_text("one")
    first = Artifact("x", tmp_path, record_files(tmp_path, ["f"])).hash
    (tmp_path / "f").write_text("two")

    assert Artifact("x", tmp_path, record_files(tmp_path, ["f"])).hash != first


def test_manifest_json_stays_valid_with_non_finite_numbers(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"ppl": float("inf"), "rows": [float("nan"), 1.5]})

    assert json.loads((tmp_path / "m.json").read_text()) == {"ppl": None, "rows": [None, 1.5]}


def test_atomic_write_keeps_old_content_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "manifest.json"
    atomic_write_json(target, {"status": "complete"})

    def failing_replace(*_args):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", failing_replace)
    with pytest.raises(OSError):
        atomic_write_text(target, "half")

    assert json.loads(target.read_text()) == {"status": "complete"}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
