"""Prune stage: Minitron-style MLP-channel width pruning to a parameter budget.

Importance of an MLP channel is the mean absolute activation entering ``down_proj``
over calibration tokens (Minitron, Muralidharan et al., 2024). The same number of
channels is kept in every layer (homogeneous), rounded down to ``round_to``, so the
student is a standard HF config with a smaller ``intermediate_size``. The channels are
removed through torch-pruning's dependency graph, which slices ``gate_proj`` and
``up_proj`` rows together with ``down_proj`` columns.
"""

from __future__ import annotations

import math
from pathlib import Path

from edgedistill.artifacts import Artifact, record_files
from edgedistill.errors import UserError

OUTPUTS = ("pruned",)


def mlp_channels_for_target(config, teacher_params: int, target_fraction: float, round_to: int) -> int:
    """Kept MLP channels per layer so the student has at most ``target_fraction`` of the params."""
    if round_to > config.intermediate_size:
        raise UserError(
            f"prune.round_to={round_to} exceeds the teacher's intermediate_size {config.intermediate_size}; lower prune.round_to"
        )
    params_per_channel = 3 * config.hidden_size * config.num_hidden_layers  # gate row, up row, down column
    non_mlp = teacher_params - params_per_channel * config.intermediate_size
    budget = target_fraction * teacher_params - non_mlp
    kept = math.floor(budget / params_per_channel / round_to) * round_to
    if kept < round_to:
        reachable = (non_mlp + params_per_channel * round_to) / teacher_params
        raise UserError(
            f"prune.target_params={target_fraction} is unreachable by MLP-channel pruning: everything but the MLPs is "
            f"already {non_mlp / teacher_params:.2f} of the teacher; use prune.target_params >= {math.ceil(reachable * 100) / 100}"
        )
    return min(kept, config.intermediate_size)


def mlp_channel_importance(model, calibration):
    """Mean |activation| per MLP channel at each layer's ``down_proj`` input: list of (I,) tensors.

    calibration: (B, T) token ids.
    """
    import torch

    def accumulate_into(total):
        def hook(_module, args, _output):  # returns None: the output is left untouched
            total.add_(args[0].detach().abs().sum(dim=(0, 1)))  # (B, T, I) -> (I,)
        return hook

    sums, hooks = [], []
    for layer in model.model.layers:
        total = torch.zeros(layer.mlp.down_proj.in_features)
        sums.append(total)
        hooks.append(layer.mlp.down_proj.register_forward_hook(accumulate_into(total)))
    try:
        with torch.no_grad():
            model(calibration, use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
    return [total / calibration.numel() for total in sums]


def prune_mlp_channels(model, importance, kept: int, example_input) -> None:
    """Remove the least important channels of every layer's MLP in place (homogeneous)."""
    import torch
    import torch_pruning as tp

    model.config.use_cache = False  # torch-pruning traces a plain forward
    # RMSNorm weights are bare parameters: tell the graph they follow the hidden dim (0).
    norms = [(m.weight, 0) for name, m in model.named_modules() if name.endswith("norm") and hasattr(m, "weight")]
    graph = tp.DependencyGraph().build_dependency(
        model, example_inputs=example_input, output_transform=lambda out: out.logits, unwrapped_parameters=norms
    )
    for layer, scores in zip(model.model.layers, importance):
        drop = torch.argsort(scores)[: scores.numel() - kept].tolist()
        if drop:
            graph.get_pruning_group(layer.mlp.gate_proj, tp.prune_linear_out_channels, idxs=drop).prune()
    model.config.intermediate_size = kept
    model.config.use_cache = True


def run(cfg: dict, inp: Artifact, out_dir: Path) -> Artifact:
    """cfg: {"prune": PruneConfig, "data": DataConfig, "seed": int}."""
    import torch

    from edgedistill.hf import count_parameters, load_model, load_tokenizer
    from edgedistill.pipeline.data import packed_sequences

    prune_cfg = cfg["prune"]
    torch.manual_seed(cfg["seed"])
    model, tokenizer = load_model(inp.model_dir), load_tokenizer(inp.model_dir)
    teacher_params = count_parameters(model)
    kept = mlp_channels_for_target(model.config, teacher_params, prune_cfg.target_params, prune_cfg.round_to)
    train, _ = packed_sequences(cfg["data"], tokenizer, cfg["seed"])
    calibration = train[: prune_cfg.calibration_sequences]  # (B, T)
    importance = mlp_channel_importance(model, calibration)
    prune_mlp_channels(model, importance, kept, calibration[:1])

    model_dir = out_dir / "pruned"
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(model_dir)
    student_params = count_parameters(model)
    metrics = {
        "pruned_params": student_params,
        "pruned_fraction": student_params / teacher_params,
        "pruned_intermediate_size": kept,
    }
    return Artifact("prune", out_dir, record_files(out_dir, ["pruned"]), {"model_dir": "pruned"}, metrics, inp)
