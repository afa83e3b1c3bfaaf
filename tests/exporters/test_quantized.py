"""Quantized exports of a trained model (the committed docs-assistant teacher: random tiny
weights make quantized parity meaningless) load in their real runtimes and pass the
parity gate; k-quants report the types llama.cpp really wrote and refuse shapes they
cannot block."""

import json

import pytest

from edgedistill.config import VerifyConfig
from edgedistill.errors import UserError
from edgedistill.exporters.formats import GGUF_QUANTIZATIONS, K_QUANT_TYPES, ONNX_QUANTIZATIONS
from edgedistill.exporters.verify import check_artifact
from edgedistill.hf import load_model, load_tokenizer
from edgedistill.pipeline.teacher import BUILTIN_FOLDERS

TRAINED = BUILTIN_FOLDERS["pydocs-teacher"]  # 22.3 M params, hidden 512, MLP 1536: rows fit k-quants


@pytest.fixture(scope="module")
def trained_model():
    return load_model(TRAINED), load_tokenizer(TRAINED)


@pytest.mark.slow
@pytest.mark.parametrize("quantization", ["int8", "int8_nbits", "int4"])
def test_quantized_onnx_of_a_trained_model_passes_its_gate(quantization, trained_model, tmp_path):
    from edgedistill.exporters.onnx import export_onnx

    out = tmp_path / quantization
    facts = export_onnx(TRAINED, out, quantization, block_size=32)
    expected_op = "MatMulInteger" if quantization == "int8" else "MatMulNBits"
    assert facts["quantized_ops"][expected_op] == 6 * 7  # q, k, v, o, gate, up, down in each of 6 layers
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generation_config.json", "model.onnx",
                                                     "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    assert json.loads((out / "config.json").read_text())["head_dim"] == 64
    result = check_artifact(*trained_model, out, "onnx", quantization, VerifyConfig())
    assert result["device_ready"], result["failures"]
    assert result["tokenizer_match"]
    assert result["thresholds"]["min_top1"] == ONNX_QUANTIZATIONS[quantization].thresholds.min_top1


@pytest.mark.slow
def test_int4_folder_loads_in_optimum_and_generates(tmp_path):
    from optimum.onnxruntime import ORTModelForCausalLM

    from edgedistill.exporters.onnx import export_onnx

    export_onnx(TRAINED, tmp_path / "int4", "int4", block_size=64)
    model = ORTModelForCausalLM.from_pretrained(tmp_path / "int4")
    tokenizer = load_tokenizer(tmp_path / "int4")
    ids = tokenizer("The json module", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 8


@pytest.mark.slow
@pytest.mark.parametrize("quantization", ["q6_k", "q5_k_m", "q4_k_m"])
def test_k_quants_of_a_trained_model_pass_and_report_their_real_types(quantization, trained_model, tmp_path):
    import gguf

    from edgedistill.exporters.gguf import export_gguf

    path = tmp_path / f"teacher-{quantization}.gguf"
    facts = export_gguf(TRAINED, path, quantization)
    types = facts["tensor_types"]
    assert set(types) - {"f32"} <= {t.lower() for t in K_QUANT_TYPES[quantization]}  # no silent fallback
    assert types["f32"] == 2 * 6 + 1  # the norms
    reader = gguf.GGUFReader(path)
    label = reader.fields["edgedistill.quantization"]
    assert bytes(label.parts[label.data[0]]).decode() == quantization
    assert not list(tmp_path.glob(".*"))  # the f32 intermediate is gone
    result = check_artifact(*trained_model, path, "gguf", quantization, VerifyConfig())
    assert result["device_ready"], result["failures"]
    assert result["tokenizer_match"]


def test_a_k_quant_on_rows_it_cannot_block_is_a_clear_error(tiny_llama_dir, tmp_path):
    from edgedistill.exporters.gguf import export_gguf

    with pytest.raises(UserError, match=r"q4_k_m needs every weight row to be a multiple of 256, but '.*' has rows of 64; "
                                        r"prune with prune.round_to=256 or export one of: f32, f16, q8_0, q4_0"):
        export_gguf(tiny_llama_dir, tmp_path / "tiny-q4_k_m.gguf", "q4_k_m")
    assert not list(tmp_path.iterdir())  # nothing half-written
    assert set(K_QUANT_TYPES) <= set(GGUF_QUANTIZATIONS)


@pytest.mark.slow
def test_the_cli_exits_2_for_an_impossible_quant_type(tmp_path, capsys):
    from edgedistill.cli import main

    code = main(["build", "tiny", "--out", str(tmp_path / "out"), "--set", "export.gguf=[q4_k_m]", "--set",
                 "export.onnx=[]", "--set", "distill.steps=2", "--set", "bench.enabled=false"])
    assert code == 2
    err = capsys.readouterr().err
    assert "multiple of 256" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "gguf").exists()


def test_quantizing_an_existing_fp32_export_equals_exporting_from_scratch(tiny_llama_dir, tmp_path):
    from edgedistill.exporters.onnx import export_onnx

    export_onnx(tiny_llama_dir, tmp_path / "fp32", "fp32")
    fp32_files = sorted(p.name for p in (tmp_path / "fp32").iterdir())
    reused = export_onnx(tiny_llama_dir, tmp_path / "from-fp32", "int4", fp32_source=tmp_path / "fp32")
    fresh = export_onnx(tiny_llama_dir, tmp_path / "fresh", "int4")
    assert reused == fresh
    assert (tmp_path / "from-fp32" / "model.onnx").read_bytes() == (tmp_path / "fresh" / "model.onnx").read_bytes()
    assert sorted(p.name for p in (tmp_path / "fp32").iterdir()) == fp32_files  # the source is left as it was
