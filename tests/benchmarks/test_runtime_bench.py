"""The runtime benchmark: every implementation runs, on identical prompt ids, and agrees."""

import json
import shutil

import torch

from benchmarks import runtime as bench
from edgedistill.exporters.gguf import export_gguf
from edgedistill.exporters.onnx import export_onnx


def test_every_implementation_decodes_the_same_greedy_text_and_reports_speeds(tiny_llama_dir, tmp_path, capsys):
    export_gguf(tiny_llama_dir, tmp_path / "student.gguf", "f32")
    export_onnx(tiny_llama_dir, tmp_path / "onnx", "fp32")
    torch_threads = torch.get_num_threads()

    code = bench.main([str(tmp_path / "student.gguf"), str(tmp_path / "onnx"), "--json", "--decode-tokens", "12",
                       "--prompt-tokens", "20", "--repeats", "2", "--warmup", "1", "--threads", "1"])
    result = json.loads(capsys.readouterr().out)

    assert code == 0
    assert torch.get_num_threads() == torch_threads  # the process's torch setting is left as it was
    assert [(r["backend"], r["impl"]) for r in result["rows"]] == [
        ("gguf", "edgedistill"), ("gguf", "llama_cpp"),
        ("onnx", "edgedistill"), ("onnx", "optimum"), ("onnx", "onnxruntime_genai"),
    ]
    texts = {r["text"] for r in result["rows"]}
    assert len(texts) == 1 and texts != {""}  # greedy, same ids: four implementations, one answer
    for row in result["rows"]:
        assert row["prompt_tokens"] == 20
        assert row["generated_tokens"] == result["rows"][0]["generated_tokens"]
        assert row["ttft_s"] > 0 and row["decode_tokens_per_s"] > 0
        assert row["prefill_tokens_per_s"] == row["prompt_tokens"] / row["ttft_s"]
    assert {(r["artifact"], r["vs"]) for r in result["ratios"]} == {
        ("student.gguf", "llama_cpp"), ("onnx", "optimum"), ("onnx", "onnxruntime_genai")}
    assert result["machine"]["cpu_count"] >= 1


def test_a_build_folder_expands_to_its_device_ready_artifacts(tiny_llama_dir, tmp_path):
    export_gguf(tiny_llama_dir, tmp_path / "gguf" / "student-f32.gguf", "f32")
    shutil.copy(tmp_path / "gguf" / "student-f32.gguf", tmp_path / "gguf" / "failed.gguf")
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": [
        {"name": "gguf-f32", "format": "gguf", "path": "gguf/student-f32.gguf", "device_ready": True},
        {"name": "gguf-bad", "format": "gguf", "path": "gguf/failed.gguf", "device_ready": False},
    ]}))

    assert bench.artifacts(tmp_path) == [("gguf-f32", tmp_path / "gguf" / "student-f32.gguf", "gguf")]
    assert bench.artifacts(tmp_path / "gguf" / "failed.gguf") == [("failed.gguf", tmp_path / "gguf" / "failed.gguf", "gguf")]
