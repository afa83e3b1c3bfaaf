import pytest

from edgedistill.benchmarks.decode import measure_decode
from edgedistill.benchmarks.machine import machine_info
from edgedistill.exporters.gguf import export_gguf


def test_measure_decode_reports_consistent_positive_numbers(tiny_llama_dir, tmp_path):
    export_gguf(tiny_llama_dir, tmp_path / "m.gguf", "f16")

    result = measure_decode(tmp_path / "m.gguf", decode_tokens=16, repeats=3, warmup=1)

    assert result["decode_tokens"] == 16 and result["repeats"] == 3
    assert result["prompt_tokens"] > 0
    for key in ("load_s", "ttft_s", "per_token_s", "decode_tokens_per_s", "prefill_tokens_per_s"):
        assert result[key] > 0, key
    assert result["decode_tokens_per_s"] * result["per_token_s"] == pytest.approx(1.0, rel=0.25)


def test_machine_info_names_cpu_and_versions():
    info = machine_info()

    assert info["cpu"] and info["cpu_count"] >= 1
    assert info["packages"]["torch"].startswith("2.13")
