import json

import pytest

from edgedistill.errors import UserError
from edgedistill.exporters.onnx import export_onnx
from edgedistill.exporters.verify import compare_logits, torch_greedy, torch_logits
from edgedistill.hf import load_model
from edgedistill.runtime import load


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_qwen2_dir"])
def test_fp32_onnx_with_cache_matches_torch(fixture, request, tmp_path):
    model_dir = request.getfixturevalue(fixture)
    out_dir = tmp_path / "onnx"

    facts = export_onnx(model_dir, out_dir, "fp32")

    config = json.loads((out_dir / "config.json").read_text())
    assert config["head_dim"] == 16
    assert facts["opset"] >= 14
    assert (out_dir / "tokenizer.json").is_file()
    torch_model, runtime_model = load_model(model_dir), load(out_dir)
    ids = list(range(5, 50))
    measured = compare_logits(torch_logits(torch_model, ids), runtime_model.logits(ids))
    assert measured["max_abs_logit_diff"] < 1e-4
    # token-by-token decoding through the KV cache gives torch's greedy tokens
    assert runtime_model.generate(ids[:6], max_tokens=12, ignore_eos=True).tokens == torch_greedy(torch_model, ids[:6], 12, None)


def test_unknown_onnx_quantization_is_a_user_error(tiny_llama_dir, tmp_path):
    with pytest.raises(UserError, match="unknown ONNX quantization 'int3'; supported: fp32"):
        export_onnx(tiny_llama_dir, tmp_path, "int3")
