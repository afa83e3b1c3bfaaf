"""The explicit slicer is exact: a sliced model computes what the teacher computes with the
removed parts switched off."""

import pytest
import torch

from edgedistill.config import DataConfig
from edgedistill.hf import load_model, load_tokenizer
from edgedistill.pipeline.slicing import SlicePlan, apply_slices


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_qwen2_dir"])
def test_removing_a_kv_group_equals_silencing_its_heads(fixture, request):
    teacher = load_model(request.getfixturevalue(fixture))
    ids = torch.randint(0, 512, (2, 12))
    student = apply_slices(teacher, SlicePlan(kept_groups={0: (1,), 1: (0,)}))
    head_dim, heads_per_group = 16, 2
    with torch.no_grad():  # zero the o_proj columns of group 0 in layer 0 and group 1 in layer 1
        teacher.model.layers[0].self_attn.o_proj.weight[:, : heads_per_group * head_dim] = 0
        teacher.model.layers[1].self_attn.o_proj.weight[:, heads_per_group * head_dim:] = 0
        expected, got = teacher(ids).logits, student(ids).logits

    assert student.config.num_key_value_heads == 1 and student.config.num_attention_heads == 2
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_removing_a_layer_equals_skipping_it(tiny_llama_dir):
    teacher = load_model(tiny_llama_dir)
    ids = torch.randint(0, 512, (2, 12))
    student = apply_slices(teacher, SlicePlan(kept_layers=(1,)))
    skip = teacher.model.layers[0].register_forward_hook(lambda _m, args, out: (args[0],) if isinstance(out, tuple) else args[0])
    with torch.no_grad():
        expected, got = teacher(ids).logits, student(ids).logits
    skip.remove()

    assert student.config.num_hidden_layers == 1
    assert student.model.layers[0].self_attn.layer_idx == 0  # renumbered for the KV cache
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_keeping_everything_changes_nothing(tiny_qwen2_dir):
    teacher = load_model(tiny_qwen2_dir)
    ids = torch.randint(0, 512, (1, 9))
    plan = SlicePlan(kept_layers=(0, 1), kept_groups={0: (0, 1), 1: (0, 1)}, kept_hidden=tuple(range(64)))

    student = apply_slices(teacher, plan)

    with torch.no_grad():
        torch.testing.assert_close(student(ids).logits, teacher(ids).logits)


@pytest.fixture(scope="module", params=["tiny_llama_dir", "tiny_qwen2_dir", "tiny_mistral_dir"])
def trained_model(request):
    """A tiny model after 150 CE steps on the shipped corpus: real structure to prune."""
    from edgedistill.data import packed_sequences

    model_dir = request.getfixturevalue(request.param)
    torch.manual_seed(0)
    model = load_model(model_dir)
    train, heldout = packed_sequences(DataConfig(seq_len=64, max_tokens=60000), load_tokenizer(model_dir), seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(150):
        batch = train[(step * 8) % (len(train) - 8):][:8]
        loss = model(batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), train[:8], heldout[:16]


def heldout_loss(model, heldout) -> float:
    with torch.no_grad():
        return model(heldout, labels=heldout).loss.item()


@pytest.mark.slow
@pytest.mark.parametrize(("dimension", "importance"), [
    ("mlp", "activation"), ("heads", "activation"), ("hidden", "activation"), ("depth", "activation"),
    ("combined", "activation"), ("combined", "magnitude"), ("combined", "taylor"),
])
def test_importance_beats_random_choice_of_the_same_shape(dimension, importance, trained_model):
    from edgedistill.pipeline.prune import prune_model
    from edgedistill.pipeline.prune_targets import PruneShape

    model, calibration, heldout = trained_model
    shape = {"mlp": PruneShape(64, 64, 2, 2), "heads": PruneShape(64, 256, 1, 2), "hidden": PruneShape(48, 256, 2, 2),
             "depth": PruneShape(64, 256, 2, 1), "combined": PruneShape(48, 128, 1, 2)}[dimension]
    by_importance, _ = prune_model(model, shape, calibration, importance)
    generator = torch.Generator().manual_seed(1)
    random_losses = []
    for _ in range(5):  # random choices of the same shape
        plan = SlicePlan(
            kept_layers=tuple(sorted(torch.randperm(2, generator=generator)[: shape.num_hidden_layers].tolist())),
            kept_groups={i: tuple(sorted(torch.randperm(2, generator=generator)[: shape.num_key_value_heads].tolist())) for i in range(2)},
            kept_hidden=tuple(sorted(torch.randperm(64, generator=generator)[: shape.hidden_size].tolist())),
        )
        import copy

        from edgedistill.pipeline.prune import prune_mlp_channels
        randomized = copy.deepcopy(model)
        prune_mlp_channels(randomized, [torch.rand(256, generator=generator) for _ in range(2)], shape.intermediate_size, calibration[:1])
        random_losses.append(heldout_loss(apply_slices(randomized, plan), heldout))

    assert heldout_loss(by_importance, heldout) < sorted(random_losses)[len(random_losses) // 2]  # beats the median random


@pytest.mark.skip(reason="torch-pruning 1.6.1 hangs (> 4 min in DependencyGraph.get_all_groups) when pruning GQA "
                         "attention heads with k_proj as root, and groups v_proj apart from o_proj; heads are cut by "
                         "edgedistill.pipeline.slicing instead. Unskip to check a newer torch-pruning.")
def test_torch_pruning_gqa_head_pruning_upstream_hang(tiny_llama_dir):
    import torch_pruning as tp

    model = load_model(tiny_llama_dir)
    model.config.use_cache = False
    example = torch.randint(0, 512, (1, 8))
    num_heads = {layer.self_attn.k_proj: 2 for layer in model.model.layers}
    pruner = tp.pruner.MetaPruner(
        model, example, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=0.5,
        ignored_layers=[model.lm_head], num_heads=num_heads, prune_head_dims=False, prune_num_heads=True,
        head_pruning_ratio=0.5, output_transform=lambda out: out.logits,
    )
    pruner.step()


@pytest.mark.parametrize("metric", ["magnitude", "taylor"])
def test_weight_based_importance_gives_one_score_per_structure(metric, tiny_qwen2_dir):
    from edgedistill.pipeline.importance import IMPORTANCE_METRICS

    model = load_model(tiny_qwen2_dir)

    mlp, groups, hidden = IMPORTANCE_METRICS[metric](model, torch.randint(0, 512, (2, 16)))

    assert [m.shape for m in mlp] == [(256,), (256,)]
    assert [g.shape for g in groups] == [(2,), (2,)]
    assert hidden.shape == (64,)
    assert all(torch.isfinite(t).all() and (t >= 0).all() for t in [*mlp, *groups, hidden])
    assert all(p.grad is None for p in model.parameters())  # Taylor leaves no gradients behind


def test_magnitude_of_a_kv_group_is_the_norm_of_its_weights(tiny_llama_dir):
    from edgedistill.pipeline.importance import magnitude_importance

    model = load_model(tiny_llama_dir)
    attention = model.model.layers[0].self_attn

    _, groups, _ = magnitude_importance(model, None)

    parts = [attention.q_proj.weight[:32], attention.k_proj.weight[:16], attention.v_proj.weight[:16],
             attention.o_proj.weight[:, :32]]
    expected = torch.sqrt(sum((p.detach() ** 2).sum() for p in parts))
    torch.testing.assert_close(groups[0][0], expected)


@pytest.mark.parametrize("name", ["tiny-qwen3", "tiny-gemma3", "tiny-phi3"])
def test_keeping_everything_changes_nothing_in_every_row(name, tmp_path):
    from edgedistill.demo.tiny import build_tiny_teacher

    teacher = load_model(build_tiny_teacher(name, tmp_path / "model"))
    layers = tuple(range(teacher.config.num_hidden_layers))
    hidden = None if name == "tiny-phi3" else tuple(range(64))  # the phi3 row prunes depth only
    plan = SlicePlan(kept_layers=layers, kept_hidden=hidden)
    ids = torch.randint(0, 512, (1, 40))  # longer than tiny-gemma3's 16-token sliding window

    with torch.no_grad():
        torch.testing.assert_close(apply_slices(teacher, plan)(ids).logits, teacher(ids).logits)


def test_gemma_hidden_cut_keeps_the_embedding_scale_and_the_tied_logit_scale(tmp_path):
    """Gemma multiplies embeddings by sqrt(hidden_size): the kept channels must enter the
    residual stream unchanged under sqrt(32) instead of sqrt(64), and the tied lm_head
    (the same rescaled matrix) must still see (1 + w_final) * E on the kept channels."""
    from edgedistill.demo.tiny import build_tiny_teacher

    teacher = load_model(build_tiny_teacher("tiny-gemma3", tmp_path / "model"))
    kept = tuple(range(1, 64, 2))
    student = apply_slices(teacher, SlicePlan(kept_hidden=kept))
    ids = torch.randint(0, 512, (2, 9))
    index = torch.tensor(kept)

    with torch.no_grad():
        torch.testing.assert_close(student.model.embed_tokens(ids), teacher.model.embed_tokens(ids)[..., index])
        old = teacher.lm_head.weight[:, index] * (1 + teacher.model.norm.weight[index])
        new = student.lm_head.weight * (1 + student.model.norm.weight)
        torch.testing.assert_close(new, old)
    assert student.lm_head.weight.data_ptr() == student.model.embed_tokens.weight.data_ptr()  # still tied
