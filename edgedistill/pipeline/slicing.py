"""Explicit structural slicing of decoder models: KV groups, hidden channels, layers.

torch-pruning 1.6.1 handles MLP channels (see prune.py) but hangs on GQA attention
heads and cannot keep a tied embedding tied through hidden-size pruning, so those cuts
are made here by slicing the state dict and loading it into a model built from the
rewritten, standard HF config (``hidden_size``, ``num_attention_heads``,
``num_key_value_heads``, explicit ``head_dim``, ``num_hidden_layers``). Query heads are
removed together with their KV head (whole GQA groups), so ``head_dim`` and RoPE stay
intact. Layer-indexed config lists (``layer_types``) follow the kept layers. Which
per-layer tensors run over the hidden size is the architecture table's
(``architectures.Architecture.hidden_slices``); per-head q/k norms (Qwen3, Gemma 3) run over
head_dim and are kept whole. Gemma multiplies embeddings by sqrt(hidden_size), so a
hidden cut rescales the kept embedding (and, tied, the final norm) to compute the same
function on the kept channels.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch

from edgedistill.architectures import architecture
from edgedistill.hf import head_dim_of

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
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
    hidden_dims = architecture(config.model_type).hidden_slices
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
        if hidden is not None and suffix in hidden_dims and tensor.dim() > hidden_dims[suffix]:
            tensor = tensor.index_select(hidden_dims[suffix], hidden)
        out[f"model.layers.{new_index[layer]}.{suffix}"] = tensor
    if hidden is not None and architecture(config.model_type).embedding_scale:
        _keep_embedding_scale(out, config, len(plan.kept_hidden))
    return out


def _keep_embedding_scale(state: dict, config, new_hidden: int) -> None:
    """Gemma's embedding output is E * sqrt(hidden_size): with c = sqrt(old / new), the
    kept E * c gives the same residual stream under the new, smaller scale. A tied lm_head
    then sees E * c too, so the final norm's effective weight (1 + w) is divided by c."""
    c = (config.hidden_size / new_hidden) ** 0.5
    state["model.embed_tokens.weight"] = state["model.embed_tokens.weight"] * c
    if config.tie_word_embeddings:  # (an untied lm_head is not scaled: nothing to undo)
        state["model.norm.weight"] = (1.0 + state["model.norm.weight"]) / c - 1.0
        if "lm_head.weight" in state:  # the same storage once loaded: it must not bring the unscaled copy back
            state["lm_head.weight"] = state["model.embed_tokens.weight"]


def check_supported(config, dimensions=()) -> None:
    """The architecture is in the table and its row may cut every one of ``dimensions``."""
    from edgedistill.architectures import refused_dimensions
    from edgedistill.errors import UserError

    refused = refused_dimensions(architecture(config.model_type), dimensions)
    if refused:
        raise UserError(refused)


def apply_slices(model, plan: SlicePlan):
    """A new model (standard HF class and config) holding the kept parts of ``model``."""
    from transformers import AutoModelForCausalLM

    cut = {"depth": plan.kept_layers, "heads": plan.kept_groups, "hidden": plan.kept_hidden}
    check_supported(model.config, [dimension for dimension, kept in cut.items() if kept is not None])
    config = sliced_config(model.config, plan)
    state = slice_state_dict(model.state_dict(), model.config, plan)
    student = AutoModelForCausalLM.from_config(config, dtype=next(model.parameters()).dtype)
    student.load_state_dict(state, strict=True)
    student.tie_weights()
    if model.generation_config is not None:
        student.generation_config = copy.deepcopy(model.generation_config)
    return student.eval()
