"""The architecture table: what every stage needs to know about a model family, as data.

One row per HF ``model_type`` (STYLE.md rule 4). Prune reads which dimensions it may cut
and which per-layer tensors run over the hidden size; the GGUF writer reads the tensor
names, the RoPE layout and the norm offset; preflight reads all of it to refuse a recipe
before anything runs; the README's "Supported models" table is generated from it
(``python -m edgedistill.architectures``). ``{bid}`` stands for the block (layer) index.
Adding a family means adding a row here (and its tiny teacher in ``demo/tiny.py``).

Torch-free: recipe loading and preflight import it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from edgedistill.errors import UserError

PRUNE_DIMENSIONS = ("heads", "mlp", "hidden", "depth")

_LLAMA_GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_LLAMA_BLOCK = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_QKV_BIASES = {
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
}
_QK_NORMS = {"self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight"}
_GEMMA3_BLOCK = {
    **_LLAMA_BLOCK, **_QK_NORMS,
    "post_attention_layernorm.weight": "post_attention_norm.weight",  # Gemma: norm of the attention output
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
}
_PHI3_BLOCK = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.qkv_proj.weight": "attn_qkv.weight",  # rows: q (heads), k, v (kv heads), as llama.cpp splits them
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_up_proj.weight": "ffn_up.weight",  # rows: gate then up, llama.cpp's fused SwiGLU order
    "mlp.down_proj.weight": "ffn_down.weight",
}

# per-layer tensor suffix -> dimension indexed by hidden channels (0 rows, 1 columns)
_LLAMA_HIDDEN = {
    "input_layernorm.weight": 0, "post_attention_layernorm.weight": 0,
    "self_attn.q_proj.weight": 1, "self_attn.k_proj.weight": 1, "self_attn.v_proj.weight": 1,
    "self_attn.o_proj.weight": 0, "self_attn.o_proj.bias": 0,
    "mlp.gate_proj.weight": 1, "mlp.up_proj.weight": 1, "mlp.down_proj.weight": 0, "mlp.down_proj.bias": 0,
}
_GEMMA3_HIDDEN = {**_LLAMA_HIDDEN, "pre_feedforward_layernorm.weight": 0, "post_feedforward_layernorm.weight": 0}
_PHI3_HIDDEN = {
    "input_layernorm.weight": 0, "post_attention_layernorm.weight": 0, "self_attn.qkv_proj.weight": 1,
    "self_attn.o_proj.weight": 0, "mlp.gate_up_proj.weight": 1, "mlp.down_proj.weight": 0,
}


@dataclass(frozen=True)
class GGUFLayout:
    """How a row's tensors and hyperparameters are written for one llama.cpp architecture.

    ``rope``: ``interleaved`` (llama.cpp's ``llama`` arch rotates adjacent pairs while HF
    rotates halves, so Q rows are permuted per head and K rows per KV head on export) or
    ``neox`` (halves, as HF: no permutation). ``norm_offset``: added to every RMSNorm
    weight (Gemma computes x * (1 + w); llama.cpp multiplies by the stored weight).
    ``sliding_window``: the per-layer window pattern is written from ``layer_types``.
    """

    arch: str
    block_tensors: dict[str, str]
    rope: str = "neox"
    norm_offset: float = 0.0
    sliding_window: bool = False
    # used instead when heads were pruned (num_heads * head_dim != hidden_size), for
    # llama.cpp archs that reject that shape
    when_heads_pruned: GGUFLayout | None = None
    global_tensors: dict[str, str] = field(default_factory=lambda: dict(_LLAMA_GLOBAL))

    @property
    def permute_qk(self) -> bool:
        return self.rope == "interleaved"


@dataclass(frozen=True)
class Architecture:
    """One model family as every stage sees it.

    ``prune``: the dimensions the prune stage may cut (``PRUNE_DIMENSIONS``).
    ``hidden_slices``: per-layer tensors indexed by the hidden size (sliced when hidden
    channels are pruned). ``embedding_scale``: the embedding output is multiplied by
    sqrt(hidden_size) (Gemma), so hidden pruning rescales the kept embedding to keep it.
    ``rope_scaling``: ``rope_type`` values the GGUF writer reproduces (None = no scaling).
    """

    model_type: str
    family: str
    gguf: GGUFLayout
    prune: tuple[str, ...]
    hidden_slices: dict[str, int]
    rope_scaling: tuple[str | None, ...] = (None, "linear", "llama3")
    embedding_scale: bool = False
    notes: str = ""


_LLAMA_GGUF = GGUFLayout("llama", _LLAMA_BLOCK, rope="interleaved")
# llama.cpp's qwen2 arch rejects n_heads * head_dim != n_embd; its llama arch takes the
# same tensors (with q/k/v biases) once Q/K are permuted to interleaved RoPE.
_QWEN2_AS_LLAMA = GGUFLayout("llama", {**_LLAMA_BLOCK, **_QKV_BIASES}, rope="interleaved")

ARCHITECTURES: dict[str, Architecture] = {row.model_type: row for row in (
    Architecture("llama", "Llama 2, Llama 3.x, SmolLM2", _LLAMA_GGUF, PRUNE_DIMENSIONS, _LLAMA_HIDDEN,
                 notes="rope_scaling llama3 written as llama.cpp's rope_freqs"),
    Architecture("mistral", "Mistral 7B", _LLAMA_GGUF, PRUNE_DIMENSIONS, _LLAMA_HIDDEN,
                 notes="sliding_window written as llama.attention.sliding_window; parity checked inside the window"),
    Architecture("qwen2", "Qwen2, Qwen2.5", GGUFLayout("qwen2", {**_LLAMA_BLOCK, **_QKV_BIASES},
                                                       when_heads_pruned=_QWEN2_AS_LLAMA),
                 PRUNE_DIMENSIONS, _LLAMA_HIDDEN, rope_scaling=(None, "linear"),
                 notes="q/k/v biases; head-pruned students are written as llama.cpp's llama arch"),
    Architecture("qwen3", "Qwen3", GGUFLayout("qwen3", {**_LLAMA_BLOCK, **_QK_NORMS}), PRUNE_DIMENSIONS,
                 _LLAMA_HIDDEN, rope_scaling=(None, "linear"), notes="per-head q/k RMSNorms"),
    Architecture("gemma3_text", "Gemma 3 (text)", GGUFLayout("gemma3", _GEMMA3_BLOCK, norm_offset=1.0, sliding_window=True),
                 PRUNE_DIMENSIONS, _GEMMA3_HIDDEN, rope_scaling=(None,), embedding_scale=True,
                 notes="(1 + w) norms, q/k norms, sliding-window layer pattern, embeddings x sqrt(hidden)"),
    # llama.cpp's phi3 arch derives head_dim from hidden / heads, so a hidden cut would not load there
    Architecture("phi3", "Phi-3", GGUFLayout("phi3", _PHI3_BLOCK), ("depth",), _PHI3_HIDDEN, rope_scaling=(None,),
                 notes="fused qkv / gate_up kept whole: depth pruning only (llama.cpp's phi3 needs heads x head_dim = hidden)"),
)}

_BLOCK = re.compile(r"model\.layers\.(\d+)\.(.+)")


def architecture(model_type: str) -> Architecture:
    """The row for ``model_type``; UserError naming the supported ones otherwise."""
    if model_type not in ARCHITECTURES:
        raise UserError(f"unsupported architecture '{model_type}'; supported: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[model_type]


def head_dim_of(config) -> int:
    """Per-head width from an HF config object or config.json dict; explicit when pruned."""
    get = config.get if isinstance(config, dict) else lambda key: getattr(config, key, None)
    return get("head_dim") or get("hidden_size") // get("num_attention_heads")


def refused_dimensions(row: Architecture, dimensions) -> str | None:
    """One line refusing the prune dimensions ``row`` cannot cut, or None when it can cut all."""
    refused = [d for d in dimensions if d not in row.prune]
    if not refused:
        return None
    return (f"pruning {' and '.join(refused)} of {row.model_type} ({row.family}) is not supported ({row.notes}); "
            f"it prunes {', '.join(row.prune)}")


def gguf_layout(config: dict) -> GGUFLayout:
    """The GGUF layout for a config.json (the pruned-heads variant where the arch needs it)."""
    layout = architecture(config.get("model_type", "")).gguf
    if layout.when_heads_pruned is not None and \
            config["num_attention_heads"] * head_dim_of(config) != config["hidden_size"]:
        return layout.when_heads_pruned
    return layout


def gguf_tensor_name(layout: GGUFLayout, hf_name: str) -> str:
    """GGUF name of an HF tensor; UserError for a tensor the table does not know."""
    block = _BLOCK.match(hf_name)
    names = layout.block_tensors if block else layout.global_tensors
    key = block.group(2) if block else hf_name
    if key not in names:
        raise UserError(f"tensor '{hf_name}' has no GGUF name for arch '{layout.arch}'; add it to edgedistill/architectures.py")
    return f"blk.{block.group(1)}.{names[key]}" if block else names[key]


def rope_type(config: dict) -> str | None:
    scaling = config.get("rope_scaling") or {}
    return scaling.get("rope_type", scaling.get("type")) if scaling else None


def supported_models_table() -> str:
    """The README's "Supported models" table, in Markdown."""
    lines = ["| model_type | family | prune | ONNX | GGUF (llama.cpp arch) | notes |", "|---|---|---|---|---|---|"]
    for row in ARCHITECTURES.values():
        prune = ", ".join(row.prune) if row.prune != PRUNE_DIMENSIONS else "heads, MLP, hidden, depth"
        lines.append(f"| `{row.model_type}` | {row.family} | {prune} | yes | `{row.gguf.arch}` | {row.notes} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(supported_models_table())
