import json
import subprocess
import sys

import pytest

from edgedistill.exporters.verify import torch_greedy
from edgedistill.hf import load_model, load_tokenizer
from edgedistill.runtime import load


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edgedistill.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["build", "--set", "distill.alpah=0.3"], "recipe key 'distill.alpah' is unknown; did you mean 'distill.alpha'?"),
        (["build", "--set", "distill.steps=many"], "recipe key 'distill.steps' must be int, got str 'many'"),
        (["build", "--set", "teacher=/no/such/teacher"], "teacher path '/no/such/teacher' does not exist"),
        (["build", "--set", "data.path=/no/such/text.txt"], "data.path '/no/such/text.txt' does not exist"),
        (["build", "no-such-recipe"], "recipe 'no-such-recipe' is neither a bundled recipe (docs-assistant, gemma3-270m-smoke, smollm2-docs, smollm2-from-api-teacher, smollm2-from-gemma3-smoke, smollm2-quantized, tiny) nor a YAML file"),
        (["build", "--set", "verify.positions=600"], "verify.positions needs 600 tokens of context but the teacher's context is 512"),
        (["build", "--set", "distill.learning_rate=.nan"], "recipe key 'distill.learning_rate' must be a finite number"),
        (["build", "--frobnicate"], "No such option: --frobnicate"),
    ],
)
def test_bad_build_input_exits_2_with_one_line_and_writes_nothing(args, message, tmp_path):
    result = cli(*args, "--out", tmp_path / "out")

    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "/no/such/model.gguf", "hi"], "/no/such/model.gguf does not exist"),
        (["generate", "{readme}", "hi"], "is not a GGUF file"),
        (["verify", "/no/such/build"], "has no readable manifest.json"),
        (["serve", "/no/such/model.gguf"], "/no/such/model.gguf does not exist"),
        (["serve", "{readme}", "--port", "0"], "is not a GGUF file"),
        (["serve", "{readme}", "--chat-template", "/no/such.jinja"], "--chat-template /no/such.jinja: no such file"),
        (["generate", "{readme}", "hi", "--chat-template", "/no/such.jinja"], "--chat-template /no/such.jinja: no such file"),
        (["serve", "{readme}", "--parallel", "0"], "Invalid value for '--parallel'"),
    ],
)
def test_bad_runtime_input_exits_2_with_one_line(args, message):
    readme = __file__.replace("tests/test_cli.py", "README.md")

    result = cli(*[a.format(readme=readme) for a in args])

    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_a_foreign_manifest_does_not_make_a_build_folder(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "mine.csv").write_text("1,2")
    (tmp_path / "manifest.json").write_text('{"name": "my-web-app"}')

    result = cli("build", "tiny", "--out", tmp_path)

    assert result.returncode == 2
    assert "is not an edgedistill build folder" in result.stderr
    assert (tmp_path / "bench" / "mine.csv").is_file()
    assert (tmp_path / "manifest.json").read_text() == '{"name": "my-web-app"}'


def test_an_internal_error_exits_3_with_its_traceback(tmp_path, monkeypatch, capsys):
    from edgedistill.cli import main
    from edgedistill.pipeline import prune

    def broken(*_args):
        raise RuntimeError("bug in a stage")

    monkeypatch.setattr(prune, "run", broken)

    code = main(["build", "tiny", "--out", str(tmp_path / "out")])

    err = capsys.readouterr().err
    assert code == 3
    assert "Traceback" in err and "RuntimeError: bug in a stage" in err
    assert "internal error" in err
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["status"] == "incomplete"


def test_build_refuses_a_folder_that_is_not_a_build(tmp_path):
    (tmp_path / "student").mkdir()
    (tmp_path / "student" / "precious.txt").write_text("keep me")

    result = cli("build", "tiny", "--out", tmp_path)

    assert result.returncode == 2
    assert "is not an edgedistill build folder" in result.stderr
    assert (tmp_path / "student" / "precious.txt").read_text() == "keep me"
    assert not (tmp_path / "manifest.json").exists()


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    result = cli("build", "tiny", "--out", tmp_path / "out", "--dry-run", "--set", "distill.alpha=0.25")

    assert result.returncode == 0, result.stderr
    assert "alpha: 0.25" in result.stdout
    for stage in ("teacher", "prune", "distill", "export", "verify", "bench"):
        assert f"  {stage:<8} run" in result.stdout
    assert ("prune (mlp): hidden 64 -> 64, mlp 256 -> 128, kv heads 2 -> 2, layers 2 -> 2; "
            "params 155,968 -> 106,816 (0.68x)") in result.stdout
    assert not (tmp_path / "out").exists()


def test_recipes_lists_the_bundled_ones():
    result = cli("recipes")

    assert result.returncode == 0
    assert "tiny" in result.stdout


@pytest.mark.slow
def test_build_tiny_end_to_end(tmp_path):
    out_dir = tmp_path / "x"

    result = cli("build", "tiny", "--out", out_dir)

    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["schema_version"] == 1
    assert list(manifest["stages"]) == ["teacher", "prune", "distill", "export", "verify", "bench"]
    for name, record in manifest["stages"].items():
        assert record["key"] and record["seconds"] >= 0
        files = record["artifact"]["files"]
        assert files, name
        assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in files)
    ready = {a["format"] for a in manifest["artifacts"] if a["device_ready"]}
    assert ready == {"gguf", "onnx"}
    metrics = manifest["metrics"]
    assert 0 < metrics["student_params"] < metrics["teacher_params"]
    assert metrics["decode_tokens_per_s_gguf_f16"] > 0 and metrics["build_seconds"] > 0
    assert "cached" not in result.stdout

    # the GGUF continues a fixed prompt exactly like the PyTorch student
    student_dir = out_dir / "student"
    student, tokenizer = load_model(student_dir), load_tokenizer(student_dir)
    prompt = tokenizer("The json module exposes", add_special_tokens=False)["input_ids"]
    gguf_tokens = load(out_dir / "gguf" / "student-f16.gguf").generate(prompt, max_tokens=24).tokens
    assert gguf_tokens == torch_greedy(student, prompt, 24, tokenizer.eos_token_id)

    rerun = cli("build", "tiny", "--out", out_dir)
    assert rerun.returncode == 0
    assert rerun.stdout.count("cached") == 6
    assert json.loads((out_dir / "manifest.json").read_text())["stages"] == manifest["stages"]

    verified = cli("verify", out_dir)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    generated = cli("generate", out_dir / "gguf" / "student-f16.gguf", "The json module", "--max-tokens", "8", "--stream",
                    "--timings")
    assert generated.returncode == 0 and generated.stdout.strip()
    assert "prompt tokens" in generated.stderr and "decode" in generated.stderr
    chat = cli("generate", out_dir / "gguf" / "student-f16.gguf", "What is json?", "--chat")
    assert chat.returncode == 2 and "this model has no chat template" in chat.stderr
    chatml = cli("generate", out_dir / "gguf" / "student-f16.gguf", "What is json?", "--chat", "--chat-template", "chatml",
                 "--max-tokens", "4", "--timings")
    assert chatml.returncode == 0 and "prompt tokens" in chatml.stderr  # the ChatML prompt rendered and ran

    gguf_path = out_dir / "gguf" / "student-f16.gguf"
    data = bytearray(gguf_path.read_bytes())
    data[-100] ^= 0xFF
    gguf_path.write_bytes(bytes(data))
    tampered = cli("verify", out_dir)
    assert tampered.returncode == 1
    assert "gguf/student-f16.gguf: sha256 differs from the manifest" in tampered.stdout


@pytest.mark.slow
def test_build_exits_1_when_an_artifact_fails_its_gate(tmp_path, monkeypatch, capsys):
    import dataclasses

    from edgedistill.cli import main
    from edgedistill.exporters.formats import GGUF_QUANTIZATIONS, LOSSLESS_FP32

    monkeypatch.setitem(GGUF_QUANTIZATIONS, "q4_0", dataclasses.replace(GGUF_QUANTIZATIONS["q4_0"], thresholds=LOSSLESS_FP32))

    code = main(["build", "tiny", "--out", str(tmp_path), "--set", "export.gguf=[q4_0]", "--set", "distill.steps=5",
                 "--set", "bench.enabled=false"])

    assert code == 1
    assert "status: failed_verification" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert "bench" not in manifest["stages"]


def test_serve_on_a_taken_port_exits_2_with_one_line(tiny_llama_dir, tmp_path):
    import socket

    from edgedistill.exporters.gguf import export_gguf

    export_gguf(tiny_llama_dir, tmp_path / "m.gguf", "f32")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = cli("serve", tmp_path / "m.gguf", "--port", port)

    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port} (Address already in use); pick another --port" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_fallen_back_gguf_tensors_get_a_summary_line_each_artifact():
    from edgedistill.cli import fallback_lines

    artifacts = [
        {"name": "gguf-q4_k_m", "facts": {"fallbacks": [
            {"tensor": "blk.0.attn_q.weight", "wanted": "q4_k", "actual": "q5_0", "row": 576},
            {"tensor": "blk.1.attn_q.weight", "wanted": "q4_k", "actual": "q5_0", "row": 576},
            {"tensor": "token_embd.weight", "wanted": "q6_k", "actual": "q8_0", "row": 576}]}},
        {"name": "gguf-f16", "facts": {"fallbacks": []}},
        {"name": "onnx-fp32", "facts": {}},
    ]

    assert fallback_lines(artifacts) == [
        "gguf-q4_k_m: 3 tensors fell back (q4_k->q5_0 x2, q6_k->q8_0 x1) because their rows do not hold the type's "
        "blocks; each is listed in the manifest (facts.fallbacks)"]


def test_recipes_keys_prints_the_generated_key_reference():
    from edgedistill.recipe_reference import key_table

    result = cli("recipes", "--keys")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == key_table()
    assert "| `distill.alpha` | `0.5` | >= 0 and <= 1 |" in result.stdout
