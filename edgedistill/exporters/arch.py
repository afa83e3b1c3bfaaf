"""Architecture facts as data: HF tensor names -> GGUF names, Q/K permutation, GGUF arch.

Supporting a new model family means adding a row to ``ARCHITECTURES`` (STYLE.md rule 4).
``{bid}`` stands for the block (layer) index.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgedistill.errors import UserError
from edgedistill.hf import head_dim_of

_LLAMA_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{bid}.input_layernorm.weight": "blk.{bid}.attn_norm.weight",
    "model.layers.{bid}.self_attn.q_proj.weight": "blk.{bid}.attn_q.weight",
    "model.layers.{bid}.self_attn.k_proj.weight": "blk.{bid}.attn_k.weight",
    "model.layers.{bid}.self_attn.v_proj.weight": "blk.{bid}.attn_v.weight",
    "model.layers.{bid}.self_attn.o_proj.weight": "blk.{bid}.attn_output.weight",
    "model.layers.{bid}.post_attention_layernorm.weight": "blk.{bid}.ffn_norm.weight",
    "model.layers.{bid}.mlp.gate_proj.weight": "blk.{bid}.ffn_gate.weight",
    "model.layers.{bid}.mlp.up_proj.weight": "blk.{bid}.ffn_up.weight",
    "model.layers.{bid}.mlp.down_proj.weight": "blk.{bid}.ffn_down.weight",
}
_BLOCK = re.compile(r"model\.layers\.(\d+)\.(.+)")
_QKV_BIASES = {
    "model.layers.{bid}.self_attn.q_proj.bias": "blk.{bid}.attn_q.bias",
    "model.layers.{bid}.self_attn.k_proj.bias": "blk.{bid}.attn_k.bias",
    "model.layers.{bid}.self_attn.v_proj.bias": "blk.{bid}.attn_v.bias",
}


@dataclass(frozen=True)
class ArchSpec:
    """How one HF ``model_type`` maps onto a llama.cpp architecture.

    ``permute_qk``: llama.cpp's ``llama`` arch applies RoPE to interleaved pairs while HF
    rotates halves, so Q rows are permuted per head (K rows per KV head) on export.
    """

    gguf_arch: str
    tensors: dict[str, str]
    permute_qk: bool
    # used instead when heads were pruned (num_heads * head_dim != hidden_size), for
    # llama.cpp archs that reject that shape
    when_heads_pruned: ArchSpec | None = None


# llama.cpp's qwen2 arch rejects n_heads * head_dim != n_embd; its llama arch takes the
# same tensors (with q/k/v biases) once Q/K are permuted to interleaved RoPE.
_QWEN2_AS_LLAMA = ArchSpec("llama", {**_LLAMA_TENSORS, **_QKV_BIASES}, permute_qk=True)

ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": ArchSpec("llama", _LLAMA_TENSORS, permute_qk=True),
    "mistral": ArchSpec("llama", _LLAMA_TENSORS, permute_qk=True),
    "qwen2": ArchSpec("qwen2", {**_LLAMA_TENSORS, **_QKV_BIASES}, permute_qk=False, when_heads_pruned=_QWEN2_AS_LLAMA),
}


def arch_spec(model_type: str, config: dict | None = None) -> ArchSpec:
    """The table row for ``model_type``; ``config`` (config.json) selects the pruned-heads row."""
    if model_type not in ARCHITECTURES:
        raise UserError(f"GGUF export does not support architecture '{model_type}'; supported: {', '.join(ARCHITECTURES)}")
    spec = ARCHITECTURES[model_type]
    if config and spec.when_heads_pruned is not None:
        if config["num_attention_heads"] * head_dim_of(config) != config["hidden_size"]:
            return spec.when_heads_pruned
    return spec


def gguf_tensor_name(spec: ArchSpec, hf_name: str) -> str:
    """GGUF name of an HF tensor; UserError for a tensor the table does not know."""
    block = _BLOCK.match(hf_name)
    pattern = f"model.layers.{{bid}}.{block.group(2)}" if block else hf_name
    if pattern not in spec.tensors:
        raise UserError(f"tensor '{hf_name}' has no GGUF name for arch '{spec.gguf_arch}'; add it to exporters/arch.py")
    return spec.tensors[pattern].format(bid=block.group(1)) if block else spec.tensors[pattern]
