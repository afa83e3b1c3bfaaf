"""Activation-based importance on calibration tokens (Minitron; ShortGPT for depth).

All functions take a model in eval mode and calibration ids (B, T) and run one forward
pass with hooks; larger scores mean more important.

* MLP channels: mean |activation| entering ``down_proj`` (Muralidharan et al., 2024).
* KV groups: mean |attention output| per query head entering ``o_proj``, summed over the
  query heads of each group (Minitron's head importance, grouped for GQA).
* Hidden channels: mean |output| of every RMSNorm (Minitron's embedding-channel score).
* Layers: block influence 1 - cos(input, output) of each decoder layer, averaged over
  tokens (ShortGPT, Men et al., 2024); low influence = the layer barely changes the stream.

Alternatives for the width dimensions (``prune.importance``): ``magnitude`` (L2 norm of a
structure's weights) and ``taylor`` (first-order Taylor, Molchanov et al. 2019).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgedistill.hf import head_dim_of, rms_norms


def _run_with_hooks(model, calibration, registrations) -> None:
    hooks = [module.register_forward_hook(hook) for module, hook in registrations]
    try:
        with torch.no_grad():
            model(calibration, use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()


def mlp_channel_importance(model, calibration) -> list[torch.Tensor]:
    """Per layer, (I,) mean |input of down_proj|."""
    scores = [torch.zeros(layer.mlp.down_proj.in_features) for layer in model.model.layers]

    def accumulate(total):
        def hook(_module, args, _output):  # returns None: the output is left untouched
            total.add_(args[0].detach().abs().float().sum(dim=(0, 1)).cpu())  # (B, T, I) -> (I,)
        return hook

    _run_with_hooks(model, calibration, [(layer.mlp.down_proj, accumulate(total))
                                         for layer, total in zip(model.model.layers, scores)])
    return [total / calibration.numel() for total in scores]


def kv_group_importance(model, calibration) -> list[torch.Tensor]:
    """Per layer, (num_key_value_heads,) summed mean |per-head attention output|."""
    config = model.config
    head_dim = head_dim_of(config)
    groups, heads = config.num_key_value_heads, config.num_attention_heads
    scores = [torch.zeros(groups) for _ in model.model.layers]

    def accumulate(total):
        def hook(_module, args, _output):
            per_head = args[0].detach().abs().float().unflatten(-1, (heads, head_dim)).mean(dim=-1)  # (B, T, heads)
            total.add_(per_head.sum(dim=(0, 1)).view(groups, heads // groups).sum(dim=-1).cpu())  # (groups,)
        return hook

    _run_with_hooks(model, calibration, [(layer.self_attn.o_proj, accumulate(total))
                                         for layer, total in zip(model.model.layers, scores)])
    return [total / calibration.numel() for total in scores]


def hidden_channel_importance(model, calibration) -> torch.Tensor:
    """(H,) mean |RMSNorm output| summed over every norm of the model."""
    total = torch.zeros(model.config.hidden_size)

    def hook(_module, _args, output):
        total.add_(output.detach().abs().float().mean(dim=(0, 1)).cpu())  # (B, T, H) -> (H,)

    _run_with_hooks(model, calibration, [(norm, hook) for norm in rms_norms(model)])
    return total


def block_influence(model, calibration) -> torch.Tensor:
    """(L,) 1 - mean cosine(layer input, layer output) over tokens."""
    scores = torch.zeros(len(model.model.layers))

    def measure(index):
        def hook(_module, args, output):
            hidden_in = args[0] if args else None
            hidden_out = output[0] if isinstance(output, tuple) else output
            cosine = F.cosine_similarity(hidden_in.float(), hidden_out.float(), dim=-1)  # (B, T)
            scores[index] = 1.0 - cosine.mean().item()
        return hook

    _run_with_hooks(model, calibration, [(layer, measure(i)) for i, layer in enumerate(model.model.layers)])
    return scores


# ---- weight-based alternatives: magnitude (sum of w^2) and first-order Taylor
# (|sum of w * dL/dw| over a structure, Molchanov et al., 2019; L = LM loss on calibration)


def _structure_sums(model, per_element) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Sum ``per_element(param)`` over each MLP channel, KV group and hidden channel (MLP
    channels and KV groups only where the architecture row prunes them: Phi-3's fused
    projections are not)."""
    from edgedistill.architectures import architecture
    from edgedistill.pipeline.slicing import _GLOBAL_HIDDEN_DIM

    config = model.config
    row = architecture(config.model_type)
    heads_per_group, head_dim = config.num_attention_heads // config.num_key_value_heads, head_dim_of(config)
    hidden = torch.zeros(config.hidden_size)
    mlp, groups = [], []
    named = dict(model.named_parameters(remove_duplicate=False))
    for name, param in named.items():
        suffix = name.split(".", 3)[-1] if name.startswith("model.layers.") else name
        dim = row.hidden_slices.get(suffix, _GLOBAL_HIDDEN_DIM.get(name))
        if dim is not None and param.dim() > dim and not (name == "lm_head.weight" and config.tie_word_embeddings):
            values = per_element(param).detach().float()
            hidden += values.sum(dim=1 - dim) if values.dim() == 2 else values
    for index, layer in enumerate(model.model.layers):
        if "mlp" not in row.prune or "heads" not in row.prune:
            break
        mlp_values = [per_element(layer.mlp.gate_proj.weight).sum(1), per_element(layer.mlp.up_proj.weight).sum(1),
                      per_element(layer.mlp.down_proj.weight).sum(0)]
        mlp.append(sum(v.detach().float() for v in mlp_values))
        attention = layer.self_attn
        query = per_element(attention.q_proj.weight).sum(1) + per_element(attention.o_proj.weight).sum(0)  # (heads*hd,)
        kv = per_element(attention.k_proj.weight).sum(1) + per_element(attention.v_proj.weight).sum(1)  # (groups*hd,)
        if attention.q_proj.bias is not None:  # Qwen2's q/k/v biases belong to their heads
            query = query + per_element(attention.q_proj.bias)
            kv = kv + per_element(attention.k_proj.bias) + per_element(attention.v_proj.bias)
        groups.append((query.detach().float().view(config.num_key_value_heads, heads_per_group * head_dim).sum(1)
                       + kv.detach().float().view(config.num_key_value_heads, head_dim).sum(1)))
    return mlp, groups, hidden


def magnitude_importance(model, calibration) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """L2 norm of each structure's weights (calibration is not used)."""
    mlp, groups, hidden = _structure_sums(model, lambda p: p.detach().float() ** 2)
    return [m.sqrt() for m in mlp], [g.sqrt() for g in groups], hidden.sqrt()


def taylor_importance(model, calibration) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """|sum of w * dL/dw| per structure, L = next-token loss on the calibration ids."""
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        model(calibration, labels=calibration, use_cache=False).loss.backward()
    mlp, groups, hidden = _structure_sums(model, lambda p: p.detach().float() * p.grad.float())
    model.zero_grad(set_to_none=True)
    return [m.abs() for m in mlp], [g.abs() for g in groups], hidden.abs()


def activation_importance(model, calibration) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    return mlp_channel_importance(model, calibration), kv_group_importance(model, calibration), \
        hidden_channel_importance(model, calibration)


# `prune.importance` -> (MLP channel scores per layer, KV group scores per layer, hidden scores)
IMPORTANCE_METRICS = {
    "activation": activation_importance,
    "magnitude": magnitude_importance,
    "taylor": taylor_importance,
}
