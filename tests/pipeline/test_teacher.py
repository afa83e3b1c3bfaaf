import shutil

import pytest

from edgedistill.errors import UserError
from edgedistill.hf import count_parameters, count_parameters_on_disk, load_model
from edgedistill.pipeline import teacher
from edgedistill.stage_context import StageContext


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_qwen2_dir"])
def test_parameters_counted_from_headers_equal_the_loaded_model(fixture, request):
    model_dir = request.getfixturevalue(fixture)

    assert count_parameters_on_disk(model_dir) == count_parameters(load_model(model_dir))


def test_local_teacher_is_used_in_place_and_its_content_keys_the_stage(tiny_llama_dir, tmp_path):
    local = tmp_path / "teacher"
    shutil.copytree(tiny_llama_dir, local)
    source = teacher.resolve_source(str(local))

    build = tmp_path / "build"
    artifact = teacher.run({"teacher": str(local), "seed": 0, "source": source}, None,
                           StageContext(build, build, build / ".state"))

    assert artifact.model_dir == local
    assert not (tmp_path / "build").exists()  # nothing written for a local teacher
    assert {f.path for f in artifact.files} >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert artifact.metrics["teacher_params"] == count_parameters(load_model(local))
    (local / "generation_config.json").write_text('{"eos_token_id": 1}')
    assert teacher.resolve_source(str(local)) != source


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("builtin:huge", "teacher 'builtin:huge' is not a builtin teacher; builtin: builtin:tiny-llama, builtin:tiny-mistral, builtin:tiny-qwen2"),
        ("./missing-folder", "teacher path './missing-folder' does not exist"),
    ],
)
def test_bad_teacher_specs_are_user_errors(spec, message):
    with pytest.raises(UserError) as error:
        teacher.resolve_source(spec)

    assert message in str(error.value)


def test_a_folder_without_weights_or_tokenizer_is_rejected_up_front(tiny_llama_dir, tmp_path):
    no_weights, no_tokenizer = tmp_path / "a", tmp_path / "b"
    shutil.copytree(tiny_llama_dir, no_weights)
    shutil.copytree(tiny_llama_dir, no_tokenizer)
    (no_weights / "model.safetensors").unlink()
    (no_tokenizer / "tokenizer.json").unlink()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "config.json").write_text('{"model_type": "llama",')

    with pytest.raises(UserError, match="has no weights"):
        teacher.resolve_source(str(no_weights))
    with pytest.raises(UserError, match="has no tokenizer"):
        teacher.resolve_source(str(no_tokenizer))
    with pytest.raises(UserError, match="config.json is not valid UTF-8 JSON"):
        teacher.resolve_source(str(tmp_path / "c"))


def test_a_teacher_too_large_for_the_memory_is_refused_before_loading(tiny_llama_dir, monkeypatch):
    from edgedistill.pipeline import gguf_teacher

    parameters = count_parameters_on_disk(tiny_llama_dir)
    monkeypatch.setattr(gguf_teacher, "available_memory", lambda: parameters * 8 - 1)
    with pytest.raises(UserError, match=r"teacher .* parameters: teacher and student in fp32 need at least .* GiB but "
                                        r".* GiB is available; use a machine with more memory or a smaller teacher"):
        teacher.resolve_source(str(tiny_llama_dir))

    monkeypatch.setattr(gguf_teacher, "available_memory", lambda: parameters * 8)
    assert teacher.resolve_source(str(tiny_llama_dir))["kind"] == "local"


def test_unsupported_architecture_is_named(tiny_llama_dir, tmp_path):
    odd = tmp_path / "odd"
    shutil.copytree(tiny_llama_dir, odd)
    config = (odd / "config.json").read_text().replace('"model_type": "llama"', '"model_type": "bert"')
    (odd / "config.json").write_text(config)

    with pytest.raises(UserError, match="unsupported architecture 'bert'; supported: llama, mistral, qwen2, qwen3, gemma3_text, phi3 \\(in "):
        teacher.resolve_source(str(odd))


def test_unreachable_hub_id_is_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)

    with pytest.raises(UserError, match="could not fetch teacher 'some-org/some-model' from the hub"):
        teacher.resolve_source("some-org/some-model")


def test_builtin_demo_teacher_resolves_to_the_committed_folder(monkeypatch, tmp_path):
    source = teacher.resolve_source("builtin:pydocs-teacher")
    assert source["kind"] == "local" and source["path"] == str(teacher.BUILTIN_FOLDERS["pydocs-teacher"].resolve())
    monkeypatch.setitem(teacher.BUILTIN_FOLDERS, "pydocs-teacher", tmp_path)
    with pytest.raises(UserError, match="the demo teacher is missing from .*train_teacher"):
        teacher.resolve_source("builtin:pydocs-teacher")
