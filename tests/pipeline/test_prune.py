import pytest
import torch
from transformers import AutoModelForCausalLM

from edgedistill.artifacts import Artifact, record_files
from edgedistill.config import DataConfig, PruneConfig
from edgedistill.errors import UserError
from edgedistill.hf import count_parameters, load_model
from edgedistill.pipeline import prune


def analytic_parameters(config) -> int:
    """Parameter count of a Llama/Qwen2 config, written out by hand."""
    hidden, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    q_out, kv_out = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    attention = hidden * q_out + 2 * hidden * kv_out + q_out * hidden
    if config.model_type == "qwen2":
        attention += q_out + 2 * kv_out  # q/k/v biases
    per_layer = attention + 3 * hidden * inter + 2 * hidden  # MLP + two RMSNorms
    embeddings = config.vocab_size * hidden * (1 if config.tie_word_embeddings else 2)
    return layers * per_layer + embeddings + hidden  # + final norm


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_qwen2_dir"])
def test_prune_reaches_budget_and_reloads(fixture, request, tmp_path):
    model_dir = request.getfixturevalue(fixture)
    teacher = Artifact("teacher", model_dir, record_files(model_dir, ["config.json"]), {"model_dir": "."})
    cfg = {"prune": PruneConfig(target_params=0.75, round_to=32), "data": DataConfig(seq_len=32, max_tokens=4000), "seed": 0}

    result = prune.run(cfg, teacher, tmp_path)

    student = AutoModelForCausalLM.from_pretrained(result.model_dir)
    teacher_params = count_parameters(load_model(model_dir))
    assert student.config.intermediate_size == result.metrics["pruned_intermediate_size"] < 256
    assert student.config.intermediate_size % 32 == 0
    assert count_parameters(student) == analytic_parameters(student.config) == result.metrics["pruned_params"]
    assert count_parameters(student) <= 0.75 * teacher_params
    logits = student(torch.randint(0, student.config.vocab_size, (2, 9))).logits
    assert logits.shape == (2, 9, student.config.vocab_size)


def test_kept_channels_follow_importance(tiny_llama_dir):
    model = load_model(tiny_llama_dir)
    calibration = torch.randint(0, model.config.vocab_size, (2, 16))
    importance = prune.mlp_channel_importance(model, calibration)
    keep = torch.argsort(importance[0], descending=True)[:64].sort().values
    expected_gate_rows = model.model.layers[0].mlp.gate_proj.weight[keep].clone()

    prune.prune_mlp_channels(model, importance, 64, calibration[:1])

    torch.testing.assert_close(model.model.layers[0].mlp.gate_proj.weight, expected_gate_rows)
    assert model.model.layers[0].mlp.down_proj.weight.shape == (64, 64)


def test_unreachable_budget_is_a_user_error(tiny_llama_dir):
    model = load_model(tiny_llama_dir)

    with pytest.raises(UserError, match=r"prune.target_params=0.1 is unreachable .* use prune.target_params >= 0.45"):
        prune.mlp_channels_for_target(model.config, count_parameters(model), 0.1, 32)
    with pytest.raises(UserError, match="prune.round_to=100000 exceeds the teacher's intermediate_size 256"):
        prune.mlp_channels_for_target(model.config, count_parameters(model), 0.5, 100000)
