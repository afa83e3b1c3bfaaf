"""Quantized exports of a trained model (the committed docs-assistant teacher: random tiny
weights make quantized parity meaningless) load in their real runtimes and pass the
parity gate; k-quants report the types really written, and rows they cannot block fall
back per tensor as llama.cpp's quantizer does, every fallback recorded."""

import json

import numpy as np

import pytest

from edgedistill.config import VerifyConfig
from edgedistill.errors import UserError
from edgedistill.exporters.formats import GGUF_QUANTIZATIONS, ONNX_QUANTIZATIONS
from edgedistill.exporters.verify import check_artifact
from edgedistill.hf import load_model, load_tokenizer
from edgedistill.pipeline.teacher import BUILTIN_FOLDERS

TRAINED = BUILTIN_FOLDERS["pydocs-teacher"]  # 22.3 M params, hidden 512, MLP 1536: rows fit k-quants


@pytest.fixture(scope="module")
def trained_model():
    return load_model(TRAINED), load_tokenizer(TRAINED)


@pytest.mark.slow
@pytest.mark.parametrize("quantization", ["int8", "int4", "int8_dynamic"])
def test_quantized_onnx_of_a_trained_model_passes_its_gate(quantization, trained_model, tmp_path):
    from edgedistill.exporters.onnx import export_onnx

    out = tmp_path / quantization
    facts = export_onnx(TRAINED, out, quantization, block_size=32)
    expected_op = "MatMulInteger" if quantization == "int8_dynamic" else "MatMulNBits"
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


# the 2-D types each mix writes on rows that hold 256-wide super-blocks
MIX_TYPES = {"q6_k": {"q6_k"}, "q5_k_m": {"q5_k", "q6_k"}, "q4_k_m": {"q4_k", "q6_k"}, "q4_0": {"q4_0", "q5_0", "q6_k"}}


@pytest.mark.slow
@pytest.mark.parametrize("quantization", ["q6_k", "q5_k_m", "q4_k_m", "q4_0"])
def test_importance_weighted_quants_of_a_trained_model_pass_and_report_their_real_types(quantization, trained_model, tmp_path):
    import gguf

    from edgedistill.exporters.gguf import export_gguf
    from edgedistill.exporters.importance_matrix import importance_matrix

    windows = [list(range(5, 200)), list(range(300, 500))]
    importance = importance_matrix(trained_model[0], windows)
    path = tmp_path / f"teacher-{quantization}.gguf"
    facts = export_gguf(TRAINED, path, quantization, importance)
    types = facts["tensor_types"]
    assert set(types) - {"f32"} == MIX_TYPES[quantization] and facts["fallbacks"] == []
    assert types["f32"] == 2 * 6 + 1  # the norms
    reader = gguf.GGUFReader(path)
    label = reader.fields["edgedistill.quantization"]
    assert bytes(label.parts[label.data[0]]).decode() == quantization
    assert reader.get_tensor(0).name == "token_embd.weight"
    assert not list(tmp_path.glob(".*"))  # no partial file is left
    result = check_artifact(*trained_model, path, "gguf", quantization, VerifyConfig())
    assert result["device_ready"], result["failures"]
    assert result["tokenizer_match"]


def test_importance_matrix_is_the_mean_squared_input_of_each_linear(tiny_llama_dir):
    import torch

    from edgedistill.exporters.importance_matrix import importance_matrix

    model = load_model(tiny_llama_dir)
    windows = [[3, 4, 5, 6, 7], [8, 9, 10]]
    captured = []
    hook = model.model.layers[0].mlp.down_proj.register_forward_pre_hook(lambda _m, args: captured.append(args[0][0]))
    matrix = importance_matrix(model, windows)
    hook.remove()
    inputs = torch.cat(captured[:2])  # (8, intermediate): every token of both windows
    assert np.allclose(matrix["model.layers.0.mlp.down_proj.weight"], (inputs.double() ** 2).mean(0).numpy(), rtol=1e-5)
    assert matrix["lm_head.weight"].shape == (model.config.hidden_size,)
    assert matrix["model.embed_tokens.weight"] is matrix["lm_head.weight"]  # tied: the same matrix


def test_a_k_quant_on_rows_it_cannot_block_falls_back_per_tensor_and_says_so(tiny_llama_dir, tmp_path):
    from edgedistill.exporters.gguf import export_gguf
    from edgedistill.runtime import load

    facts = export_gguf(tiny_llama_dir, tmp_path / "tiny-q4_k_m.gguf", "q4_k_m")  # 64-wide rows: no 256 blocks

    wanted = {f["tensor"]: (f["wanted"], f["actual"]) for f in facts["fallbacks"]}
    assert wanted["blk.0.ffn_up.weight"] == ("q4_k", "q5_0")
    assert wanted["blk.1.attn_v.weight"] == ("q6_k", "q8_0")  # the last layer of two takes more bits
    assert wanted["token_embd.weight"] == ("q6_k", "q8_0")  # tied: it is the output projection
    assert all(f["row"] == 64 for f in facts["fallbacks"])  # ffn_down's 256-wide rows keep their k-quant
    assert facts["tensor_types"]["q5_0"] == sum(actual == "q5_0" for _, actual in wanted.values())
    assert len(load(tmp_path / "tiny-q4_k_m.gguf").logits([3, 4, 5])) == 3  # llama.cpp loads what was written


@pytest.mark.slow
def test_the_cli_exits_2_for_an_unknown_quant_type(tmp_path, capsys):
    from edgedistill.cli import main

    code = main(["build", "tiny", "--out", str(tmp_path / "out"), "--set", "export.gguf=[q3_k]", "--set",
                 "export.onnx=[]", "--set", "distill.steps=2", "--set", "bench.enabled=false"])
    assert code == 2
    err = capsys.readouterr().err
    assert "q3_k" in err and "Traceback" not in err
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


@pytest.fixture(scope="module")
def smollm2():
    """SmolLM2-135M-Instruct as an HF folder (real weights, 576-wide rows), with its model and tokenizer."""
    from edgedistill.pipeline.gguf_teacher import REAL_MODEL_BUILTINS, import_gguf

    try:
        folder = import_gguf(REAL_MODEL_BUILTINS["smollm2-135m-instruct"].locate())
    except UserError as exc:
        pytest.skip(str(exc))  # the real-models extra is not installed (CI installs it)
    return folder, load_model(folder), load_tokenizer(folder)


@pytest.mark.slow
def test_real_weights_pass_the_4_bit_gguf_gates_only_with_the_importance_matrix_and_mix(smollm2, tmp_path):
    import dataclasses

    from edgedistill.exporters.formats import TensorMix
    from edgedistill.exporters.gguf import export_gguf
    from edgedistill.exporters.importance_matrix import measure

    folder, model, tokenizer = smollm2
    importance, tokens = measure(folder, "builtin:pydocs")
    results = {}
    for quantization in ("q4_k_m", "q4_0"):
        facts = export_gguf(folder, tmp_path / f"{quantization}.gguf", quantization, importance)
        results[quantization] = check_artifact(model, tokenizer, tmp_path / f"{quantization}.gguf", "gguf", quantization,
                                               VerifyConfig())
        assert results[quantization]["device_ready"], results[quantization]["failures"]
    assert tokens == 8192
    assert {f["actual"] for f in facts["fallbacks"]} == {"q8_0"}  # q4_0's Q6_K output on 576-wide rows
    # plain rounding with every tensor at Q4_0 (the old export) is what the gate must catch
    plain = dataclasses.replace(GGUF_QUANTIZATIONS["q4_0"], mix=TensorMix("Q4_0", output="Q6_K"), importance=False)
    GGUF_QUANTIZATIONS["q4_0"], saved = plain, GGUF_QUANTIZATIONS["q4_0"]
    try:
        export_gguf(folder, tmp_path / "plain.gguf", "q4_0")
        broken = check_artifact(model, tokenizer, tmp_path / "plain.gguf", "gguf", "q4_0", VerifyConfig())
    finally:
        GGUF_QUANTIZATIONS["q4_0"] = saved
    assert not broken["device_ready"] and broken["mean_kl"] > 0.15


@pytest.mark.slow
@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_real_weights_pass_the_weight_only_onnx_gates(quantization, smollm2, tmp_path):
    from edgedistill.exporters.onnx import export_onnx

    folder, model, tokenizer = smollm2
    export_onnx(folder, tmp_path / quantization, quantization)

    result = check_artifact(model, tokenizer, tmp_path / quantization, "onnx", quantization, VerifyConfig())

    assert result["device_ready"], result["failures"]
