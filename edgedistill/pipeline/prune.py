"""Prune stage: Minitron-style width pruning and ShortGPT-style depth pruning.

The budget (``prune.target_params`` of the teacher, ``prune.strategy``) is resolved to a
standard HF shape (prune_targets.py). Importance is measured once on the teacher with
calibration text (importance.py). Then, keeping the same counts in every layer:

1. MLP channels go through torch-pruning's dependency graph, which slices ``gate_proj``
   and ``up_proj`` rows together with ``down_proj`` columns.
2. KV groups (with their query heads), hidden channels (embeddings, norms, every
   projection, lm_head; a tied embedding stays tied) and layers are cut by the explicit
   slicer (slicing.py): torch-pruning 1.6.1 hangs on GQA head groups.

The report (metrics and payload) lists the shapes, the dropped layers, the kept KV
groups per layer, parameters per component before/after and the pruned model's held-out
perplexity before any distillation.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgedistill.artifacts import Artifact, record_files
from edgedistill.stage_context import StageContext

OUTPUTS = ("pruned",)
PLAN_FILE = "pruning_plan.json"
COMPONENTS = {"embedding": ("embed_tokens", "lm_head"), "attention": ("self_attn",), "mlp": ("mlp",), "norm": ("norm",)}


def component_parameters(model) -> dict[str, int]:
    """Unique parameters per component (a tied lm_head counts once, as embedding)."""
    counts = dict.fromkeys(COMPONENTS, 0)
    seen = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            continue
        seen.add(id(param))
        component = next(c for c, keys in COMPONENTS.items() if any(k in name for k in keys))
        counts[component] += param.numel()
    return counts


def prune_mlp_channels(model, importance, kept: int, example_input) -> list[list[int]]:
    """Remove the least important channels of every layer's MLP in place (homogeneous).

    Returns the kept channel indices of each layer, ascending.
    """
    import torch
    import torch_pruning as tp

    from edgedistill.hf import rms_norms

    if kept >= model.config.intermediate_size:
        return [list(range(model.config.intermediate_size)) for _ in model.model.layers]
    model.config.use_cache = False  # torch-pruning traces a plain forward
    # RMSNorm weights are bare parameters: tell the graph they follow the hidden dim (0).
    # Per-head q/k norms (Qwen3, Gemma 3) too: no MLP group reaches them, said explicitly.
    head_norms = [m for name, m in model.named_modules() if name.endswith(("q_norm", "k_norm"))]
    norms = [(m.weight, 0) for m in [*rms_norms(model), *head_norms]]
    graph = tp.DependencyGraph().build_dependency(
        model, example_inputs=example_input, output_transform=lambda out: out.logits, unwrapped_parameters=norms
    )
    kept_channels = []
    for layer, scores in zip(model.model.layers, importance):
        order = torch.argsort(scores)
        drop = order[: scores.numel() - kept].tolist()
        kept_channels.append(sorted(order[scores.numel() - kept:].tolist()))
        graph.get_pruning_group(layer.mlp.gate_proj, tp.prune_linear_out_channels, idxs=drop).prune()
    model.config.intermediate_size = kept
    model.config.use_cache = True
    return kept_channels


def slice_plan(model, shape, calibration, group_scores, hidden_scores):
    """Keep the most important KV groups per layer, hidden channels and layers."""
    import torch

    from edgedistill.pipeline.importance import block_influence
    from edgedistill.pipeline.slicing import SlicePlan

    def top(scores, count):
        return tuple(sorted(torch.argsort(scores, descending=True)[:count].tolist()))

    config = model.config
    kept_layers = kept_groups = kept_hidden = None
    if shape.num_hidden_layers < config.num_hidden_layers:
        kept_layers = top(block_influence(model, calibration), shape.num_hidden_layers)
    if shape.num_key_value_heads < config.num_key_value_heads:
        kept_groups = {i: top(scores, shape.num_key_value_heads) for i, scores in enumerate(group_scores)}
    if shape.hidden_size < config.hidden_size:
        kept_hidden = top(hidden_scores, shape.hidden_size)
    return SlicePlan(kept_layers, kept_groups, kept_hidden)


def prune_model(teacher, shape, calibration, importance: str = "activation"):
    """The pruned student (a new model) and what was kept (``kept_structures``); every
    score is measured on the unpruned teacher."""
    import copy

    from edgedistill.pipeline.importance import IMPORTANCE_METRICS
    from edgedistill.pipeline.slicing import apply_slices, check_supported

    check_supported(teacher.config, ["mlp"] if shape.intermediate_size < teacher.config.intermediate_size else [])
    mlp_scores, group_scores, hidden_scores = IMPORTANCE_METRICS[importance](teacher, calibration)
    plan = slice_plan(teacher, shape, calibration, group_scores, hidden_scores)
    student = copy.deepcopy(teacher)
    kept_mlp = prune_mlp_channels(student, mlp_scores, shape.intermediate_size, calibration[:1])
    return apply_slices(student, plan), kept_structures(teacher.config, plan, kept_mlp)


def kept_structures(config, plan, kept_mlp: list[list[int]]) -> dict:
    """Indices into the teacher of everything kept, keyed by the student's layer index."""
    layers = list(plan.kept_layers) if plan.kept_layers is not None else list(range(config.num_hidden_layers))
    all_groups = list(range(config.num_key_value_heads))
    return {
        "dropped_layers": sorted(set(range(config.num_hidden_layers)) - set(layers)),
        "layers": {str(new): {"teacher_layer": old, "mlp_channels": kept_mlp[old],
                              "kv_groups": list(plan.kept_groups[old]) if plan.kept_groups else all_groups}
                   for new, old in enumerate(layers)},
        "hidden_channels": list(plan.kept_hidden) if plan.kept_hidden is not None else list(range(config.hidden_size)),
    }


def run(cfg: dict, inp: Artifact, ctx: StageContext) -> Artifact:
    """cfg: {"prune": PruneConfig, "data": DataConfig, "data_content": [...], "seed": int}.

    ``inp`` is the teacher, or an independent student (``prune.student``): the model cut
    here, its size the budget's base; metrics name which (``teacher_params_*`` or
    ``student_init_params_*``)."""
    out_dir = ctx.out_dir
    source = "teacher" if inp.stage == "teacher" else "student_init"
    import dataclasses

    import torch

    from edgedistill.hf import count_parameters, load_model, load_tokenizer, save_model_folder
    from edgedistill.data import packed_sequences
    from edgedistill.pipeline.evaluate import compare_on_heldout
    from edgedistill.pipeline.prune_targets import resolve_shape

    prune_cfg = cfg["prune"]
    torch.manual_seed(cfg["seed"])
    teacher, tokenizer = load_model(inp.model_dir), load_tokenizer(inp.model_dir)
    teacher_params = count_parameters(teacher)
    element_bytes = next(teacher.parameters()).element_size()
    shape = resolve_shape(teacher.config, teacher_params, prune_cfg)
    train, heldout = packed_sequences(cfg["data"], tokenizer, cfg["seed"])
    student, kept = prune_model(teacher, shape, train[: prune_cfg.calibration_sequences], prune_cfg.importance)

    model_dir = out_dir / "pruned"
    save_model_folder(student, tokenizer, model_dir)
    (model_dir / PLAN_FILE).write_text(json.dumps(kept) + "\n", encoding="utf-8")
    student_params = count_parameters(student)
    before, after = component_parameters(teacher), component_parameters(student)
    quality = compare_on_heldout(student, teacher, heldout[:16])
    metrics = {
        "pruned_params": student_params,
        "pruned_fraction": student_params / teacher_params,
        **{f"pruned_{key}": value for key, value in dataclasses.asdict(shape).items()},
        **{f"{source}_params_{c}": n for c, n in before.items()},
        **{f"pruned_params_{c}": n for c, n in after.items()},
        **{f"{source}_bytes_{c}": n * element_bytes for c, n in before.items()},
        **{f"pruned_bytes_{c}": n * element_bytes for c, n in after.items()},
        "pruned_val_ppl": quality["student_val_ppl"],
        "pruned_teacher_top1_agreement": quality["student_teacher_val_top1_agreement"],
    }
    payload = {
        "model_dir": "pruned",
        "strategy": prune_cfg.strategy,
        "importance": prune_cfg.importance,
        "shape": dataclasses.asdict(shape),
        "dropped_layers": kept["dropped_layers"],
        "kept_structures": f"pruned/{PLAN_FILE}",  # every kept index, per student layer
    }
    return Artifact("prune", out_dir, record_files(out_dir, ["pruned"]), payload, metrics, inp)
