import itertools

import pytest
import torch
from transformers import AutoModelForCausalLM

from edgedistill.artifacts import Artifact, record_files
from edgedistill.config import DataConfig, PruneConfig, PruneRatios
from edgedistill.errors import UserError
from edgedistill.hf import count_parameters, load_model
from edgedistill.pipeline import prune
from edgedistill.pipeline.prune_targets import PruneShape, resolve_shape
from edgedistill.stage_context import StageContext


def analytic_parameters(config) -> int:
    """Parameter count of a Llama/Qwen2/Mistral config, written out by hand."""
    hidden, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    q_out, kv_out = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    attention = hidden * q_out + 2 * hidden * kv_out + q_out * hidden
    if config.model_type == "qwen2":
        attention += q_out + 2 * kv_out  # q/k/v biases
    per_layer = attention + 3 * hidden * inter + 2 * hidden  # MLP + two RMSNorms
    embeddings = config.vocab_size * hidden * (1 if config.tie_word_embeddings else 2)
    return layers * per_layer + embeddings + hidden  # + final norm


CASES = list(itertools.product(
    ["tiny_llama_dir", "tiny_qwen2_dir", "tiny_mistral_dir"],
    [("mlp", 1.0, 0.75), ("mlp", 0.5, 0.8), ("width", 1.0, 0.5), ("depth", 1.0, 0.7), ("width", 0.5, 0.4)],
))


@pytest.mark.parametrize(("fixture", "case"), CASES)
def test_every_strategy_reloads_with_the_analytic_parameter_count(fixture, case, request, tmp_path):
    strategy, kv_keep, target = case
    model_dir = request.getfixturevalue(fixture)
    teacher = Artifact("teacher", model_dir, record_files(model_dir, ["config.json"]), {"model_dir": "."})
    prune_cfg = PruneConfig(target_params=target, strategy=strategy, kv_heads_keep=kv_keep, round_to=32)
    cfg = {"prune": prune_cfg, "data": DataConfig(seq_len=32, max_tokens=4000), "seed": 0}

    result = prune.run(cfg, teacher, StageContext.scratch(tmp_path))

    student = AutoModelForCausalLM.from_pretrained(result.model_dir)
    teacher_params = count_parameters(load_model(model_dir))
    shape = result.payload["shape"]
    assert (student.config.hidden_size, student.config.intermediate_size, student.config.num_key_value_heads,
            student.config.num_hidden_layers) == tuple(shape.values())
    assert student.config.num_attention_heads == 2 * student.config.num_key_value_heads  # GQA ratio kept
    assert student.config.head_dim == 16
    assert count_parameters(student) == analytic_parameters(student.config) == result.metrics["pruned_params"]
    assert count_parameters(student) <= target * teacher_params
    assert sum(result.metrics[f"pruned_params_{c}"] for c in prune.COMPONENTS) == result.metrics["pruned_params"]
    logits = student(torch.randint(0, student.config.vocab_size, (2, 9))).logits
    assert logits.shape == (2, 9, student.config.vocab_size)
    if strategy == "depth":
        assert len(result.payload["dropped_layers"]) == 2 - shape["num_hidden_layers"]


@pytest.mark.parametrize("importance", ["magnitude", "taylor"])
def test_ratios_strategy_with_weight_based_importance(importance, tiny_qwen2_dir, tmp_path):
    teacher = Artifact("teacher", tiny_qwen2_dir, record_files(tiny_qwen2_dir, ["config.json"]), {"model_dir": "."})
    prune_cfg = PruneConfig(strategy="ratios", importance=importance, ratios=PruneRatios(mlp=0.5, hidden=0.75, layers=0.5),
                            kv_heads_keep=0.5, round_to=16)
    cfg = {"prune": prune_cfg, "data": DataConfig(seq_len=32, max_tokens=4000), "seed": 0}

    result = prune.run(cfg, teacher, StageContext.scratch(tmp_path))

    assert result.payload["shape"] == {"hidden_size": 48, "intermediate_size": 128, "num_key_value_heads": 1,
                                       "num_hidden_layers": 1}
    assert result.payload["importance"] == importance
    student = AutoModelForCausalLM.from_pretrained(result.model_dir)
    assert count_parameters(student) == analytic_parameters(student.config)


def test_tied_embeddings_stay_tied_through_hidden_pruning_and_reload(tiny_llama_dir, tmp_path):
    teacher = load_model(tiny_llama_dir)
    student, _ = prune.prune_model(teacher, PruneShape(32, 128, 1, 1), torch.randint(0, 512, (2, 16)))
    student.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 512, (2, 9))

    assert student.get_output_embeddings().weight.data_ptr() == student.get_input_embeddings().weight.data_ptr()
    assert reloaded.get_output_embeddings().weight.data_ptr() == reloaded.get_input_embeddings().weight.data_ptr()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, student(ids).logits)


def test_every_kept_index_lands_where_the_plan_says(tiny_qwen2_dir):
    teacher = load_model(tiny_qwen2_dir)
    student, kept = prune.prune_model(teacher, PruneShape(48, 96, 1, 1), torch.randint(0, 512, (2, 16)))
    hidden = torch.tensor(kept["hidden_channels"])
    layer = kept["layers"]["0"]
    old = teacher.model.layers[layer["teacher_layer"]]
    new = student.model.layers[0]
    mlp = torch.tensor(layer["mlp_channels"])
    group = layer["kv_groups"][0]
    q_rows, kv_rows = torch.arange(group * 32, group * 32 + 32), torch.arange(group * 16, group * 16 + 16)

    assert len(kept["dropped_layers"]) == 1 and len(hidden) == 48 and len(mlp) == 96
    expected = {
        "embed": (teacher.model.embed_tokens.weight[:, hidden], student.model.embed_tokens.weight),
        "lm_head": (teacher.lm_head.weight[:, hidden], student.lm_head.weight),
        "norm": (teacher.model.norm.weight[hidden], student.model.norm.weight),
        "input_norm": (old.input_layernorm.weight[hidden], new.input_layernorm.weight),
        "q": (old.self_attn.q_proj.weight[q_rows][:, hidden], new.self_attn.q_proj.weight),
        "q_bias": (old.self_attn.q_proj.bias[q_rows], new.self_attn.q_proj.bias),
        "k": (old.self_attn.k_proj.weight[kv_rows][:, hidden], new.self_attn.k_proj.weight),
        "v_bias": (old.self_attn.v_proj.bias[kv_rows], new.self_attn.v_proj.bias),
        "o": (old.self_attn.o_proj.weight[hidden][:, q_rows], new.self_attn.o_proj.weight),
        "gate": (old.mlp.gate_proj.weight[mlp][:, hidden], new.mlp.gate_proj.weight),
        "down": (old.mlp.down_proj.weight[hidden][:, mlp], new.mlp.down_proj.weight),
    }
    assert old.self_attn.q_proj.bias.abs().max() > 0  # biases are real in the fixture
    for name, (want, got) in expected.items():
        torch.testing.assert_close(got, want, msg=name)


def test_unsupported_architectures_are_refused_by_the_slicer():
    from transformers import AutoConfig, AutoModelForCausalLM

    from edgedistill.pipeline.slicing import SlicePlan, apply_slices

    gemma = AutoModelForCausalLM.from_config(AutoConfig.for_model(
        "gemma", vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16))

    with pytest.raises(UserError, match="unsupported architecture 'gemma'; supported: llama, mistral, qwen2, qwen3, gemma3_text, phi3"):
        apply_slices(gemma, SlicePlan(kept_hidden=tuple(range(16))))


def test_kept_mlp_channels_follow_importance(tiny_llama_dir):
    from edgedistill.pipeline.importance import mlp_channel_importance

    model = load_model(tiny_llama_dir)
    calibration = torch.randint(0, model.config.vocab_size, (2, 16))
    importance = mlp_channel_importance(model, calibration)
    keep = torch.argsort(importance[0], descending=True)[:64].sort().values
    expected_gate_rows = model.model.layers[0].mlp.gate_proj.weight[keep].clone()

    prune.prune_mlp_channels(model, importance, 64, calibration[:1])

    torch.testing.assert_close(model.model.layers[0].mlp.gate_proj.weight, expected_gate_rows)
    assert model.model.layers[0].mlp.down_proj.weight.shape == (64, 64)


@pytest.mark.parametrize(
    ("prune_cfg", "message"),
    [
        (PruneConfig(target_params=0.1), "prune.target_params=0.1 is unreachable with prune.strategy=mlp: its smallest student is 0.45"),
        (PruneConfig(target_params=0.3, strategy="depth"), "unreachable with prune.strategy=depth"),
        (PruneConfig(target_params=0.5, round_to=100000), "prune.round_to=100000 exceeds the teacher's intermediate_size 256"),
        (PruneConfig(strategy="width", round_to=128), "prune.round_to=128 exceeds the teacher's hidden_size 64"),
        (PruneConfig(strategy="ratios", ratios=PruneRatios(hidden=0.5), round_to=128), "prune.round_to=128 exceeds the teacher's hidden_size 64"),
    ],
)
def test_unreachable_budgets_are_user_errors(prune_cfg, message, tiny_llama_dir):
    model = load_model(tiny_llama_dir)

    with pytest.raises(UserError) as error:
        resolve_shape(model.config, count_parameters(model), prune_cfg)

    assert message in str(error.value)


def test_kv_heads_keep_rounds_down_and_ratios_never_grow_a_dimension(tiny_llama_dir):
    model = load_model(tiny_llama_dir)
    params = count_parameters(model)

    three_quarters = resolve_shape(model.config, params, PruneConfig(strategy="ratios", kv_heads_keep=0.75))
    mlp_only = resolve_shape(model.config, params, PruneConfig(strategy="ratios", ratios=PruneRatios(mlp=0.1), round_to=128))

    assert three_quarters.num_key_value_heads == 1
    assert mlp_only == PruneShape(64, 128, 2, 2)
