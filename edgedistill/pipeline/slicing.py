"""Explicit structural slicing of Llama-family models: KV groups, hidden channels, layers.

torch-pruning 1.6.1 handles MLP channels (see prune.py) but hangs on GQA attention
heads and cannot keep a tied embedding tied through hidden-size pruning, so those cuts
are made here by slicing the state dict and loading it into a model built from the
rewritten, standard HF config (``hidden_size``, ``num_attention_heads``,
``num_key_value_heads``, explicit ``head_dim``, ``num_hidden_layers``). Query heads are
removed together with their KV head (whole GQA groups), so ``head_dim`` and RoPE stay
intact. Layer-indexed config lists (``layer_types``) follow the kept layers.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch

from edgedistill.hf import head_dim_of

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
# tensor suffix -> (dimension sliced by kept hidden channels: 0 rows, 1 columns, None)
_HIDDEN_DIM = {
    "input_layernorm.weight": 0, "post_attention_layernorm.weight": 0,
    "self_attn.q_proj.weight": 1, "self_attn.k_proj.weight": 1, "self_attn.v_proj.weight": 1,
    "self_attn.o_proj.weight": 0, "self_attn.o_proj.bias": 0,
    "mlp.gate_proj.weight": 1, "mlp.up_proj.weight": 1, "mlp.down_proj.weight": 0, "mlp.down_proj.bias": 0,
}
_GLOBAL_HIDDEN_DIM = {"model.embed_tokens.weight": 1, "model.norm.weight": 0, "lm_head.weight": 1}
# tensor suffix -> (which head index set, dimension)
_HEAD_DIM = {
    "self_attn.q_proj.weight": ("query", 0), "self_attn.q_proj.bias": ("query", 0),
    "self_attn.k_proj.weight": ("kv", 0), "self_attn.k_proj.bias": ("kv", 0),
    "self_attn.v_proj.weight": ("kv", 0), "self_attn.v_proj.bias": ("kv", 0),
    "self_attn.o_proj.weight": ("query", 1),
}


@dataclass(frozen=True)
class SlicePlan:
    """What to keep; None keeps a dimension whole.

    kept_layers: old layer indices, ascending. kept_groups: old layer index -> KV groups
    kept (the same count in every layer). kept_hidden: hidden channel indices.
    """

    kept_layers: tuple[int, ...] | None = None
    kept_groups: dict[int, tuple[int, ...]] | None = None
    kept_hidden: tuple[int, ...] | None = None


def _head_rows(groups, heads_per_group: int, head_dim: int, query: bool) -> torch.Tensor:
    """Row indices of q (query=True) or k/v for the kept KV groups."""
    width = heads_per_group * head_dim if query else head_dim
    return torch.cat([torch.arange(g * width, (g + 1) * width) for g in groups])


def sliced_config(config, plan: SlicePlan):
    new = copy.deepcopy(config)
    new.head_dim = head_dim_of(config)  # explicit: hidden_size // heads no longer holds
    if plan.kept_groups is not None:
        groups = len(next(iter(plan.kept_groups.values())))
        heads_per_group = config.num_attention_heads // config.num_key_value_heads
        new.num_key_value_heads, new.num_attention_heads = groups, groups * heads_per_group
    if plan.kept_hidden is not None:
        new.hidden_size = len(plan.kept_hidden)
    if plan.kept_layers is not None:
        new.num_hidden_layers = len(plan.kept_layers)
        if getattr(config, "layer_types", None):
            new.layer_types = [config.layer_types[i] for i in plan.kept_layers]
        if isinstance(getattr(config, "max_window_layers", None), int):  # Qwen2: layers below it use full attention
            new.max_window_layers = sum(1 for i in plan.kept_layers if i < config.max_window_layers)
    return new


def slice_state_dict(state: dict[str, torch.Tensor], config, plan: SlicePlan) -> dict[str, torch.Tensor]:
    """The state dict of the sliced model (layer keys renumbered)."""
    layers = plan.kept_layers if plan.kept_layers is not None else tuple(range(config.num_hidden_layers))
    new_index = {old: new for new, old in enumerate(layers)}
    hidden = None if plan.kept_hidden is None else torch.tensor(plan.kept_hidden)
    heads_per_group, head_dim = config.num_attention_heads // config.num_key_value_heads, head_dim_of(config)
    out = {}
    for name, tensor in state.items():
        match = _LAYER.match(name)
        if match is None:
            dim = _GLOBAL_HIDDEN_DIM.get(name)
            out[name] = tensor if hidden is None or dim is None else tensor.index_select(dim, hidden)
            continue
        layer, suffix = int(match.group(1)), match.group(2)
        if layer not in new_index:
            continue
        if plan.kept_groups is not None and suffix in _HEAD_DIM:
            kind, dim = _HEAD_DIM[suffix]
            rows = _head_rows(plan.kept_groups[layer], heads_per_group, head_dim, kind == "query")
            tensor = tensor.index_select(dim, rows)
        if hidden is not None and suffix in _HIDDEN_DIM and tensor.dim() > _HIDDEN_DIM[suffix]:
            tensor = tensor.index_select(_HIDDEN_DIM[suffix], hidden)
        out[f"model.layers.{new_index[layer]}.{suffix}"] = tensor
    return out


def check_supported(config) -> None:
    """Only the Llama layout is sliced (Gemma's embedding scale, Qwen3's q/k norms and MoE
    experts would be cut wrongly)."""
    from edgedistill.errors import UserError
    from edgedistill.hf import SUPPORTED_ARCHITECTURES

    if config.model_type not in SUPPORTED_ARCHITECTURES:
        raise UserError(f"pruning does not support architecture '{config.model_type}'; supported: {', '.join(SUPPORTED_ARCHITECTURES)}")


def apply_slices(model, plan: SlicePlan):
    """A new model (standard HF class and config) holding the kept parts of ``model``."""
    from transformers import AutoModelForCausalLM

    check_supported(model.config)
    config = sliced_config(model.config, plan)
    state = slice_state_dict(model.state_dict(), model.config, plan)
    student = AutoModelForCausalLM.from_config(config, dtype=next(model.parameters()).dtype)
    student.load_state_dict(state, strict=True)
    student.tie_weights()
    if model.generation_config is not None:
        student.generation_config = copy.deepcopy(model.generation_config)
    return student.eval()
