"""Registries of export formats, quantization types and their parity thresholds.

Pure data (no torch, no onnx): the recipe validator, the exporters, the parity gate and
the runtime all read these tables. Adding a quantization type means adding a row.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParityThresholds:
    """What an artifact must meet against the fp32 PyTorch student on fixed token ids.

    ``max_abs_logit``: bound on max |logit_torch - logit_artifact| (None: recorded only).
    ``max_mean_kl``: bound on mean KL(p_torch || p_artifact) per position, nats.
    ``min_top1``: least fraction of positions whose argmax agrees.
    ``greedy_must_match``: the greedy continuation of each prompt must be identical.
    """

    max_abs_logit: float | None
    max_mean_kl: float
    min_top1: float
    greedy_must_match: bool


@dataclass(frozen=True)
class Quantization:
    name: str
    description: str
    thresholds: ParityThresholds
    ggml_type: str | None = None  # gguf-py GGMLQuantizationType member for 2-D weights
    llama_ftype: str | None = None  # k-quants: llama.cpp's LLAMA_FTYPE_* made by llama_model_quantize
    row_multiple: int = 32  # every 2-D weight row (input channels) must be a multiple of this


# Quantized thresholds were set on trained models (the docs-assistant student and teacher,
# and tiny 64-wide Llama/Mistral/Qwen2/pruned models trained 300 steps; random weights
# give flat logits that make them meaningless), with margin over the measured values in
# the README's export table. 4-bit formats on 64-wide models flip up to 18% of argmaxes
# among near-ties while their mean KL stays below 0.04: for them the KL bound is the
# sharp check (a broken export, e.g. a wrong Q/K permutation, gives KL > 1).
LOSSLESS_FP32 = ParityThresholds(max_abs_logit=1e-3, max_mean_kl=1e-6, min_top1=1.0, greedy_must_match=True)

ONNX_QUANTIZATIONS: dict[str, Quantization] = {
    "fp32": Quantization("fp32", "fp32 weights, KV cache inputs/outputs", LOSSLESS_FP32),
    "int8": Quantization(
        "int8", "int8 MatMul weights per output channel, activations quantized at run time (dynamic)",
        ParityThresholds(max_abs_logit=None, max_mean_kl=1e-2, min_top1=0.92, greedy_must_match=False),
    ),
    "int8_nbits": Quantization(
        "int8_nbits", "weight-only int8 MatMulNBits, symmetric blocks of export.onnx_block_size, fp32 activations",
        ParityThresholds(max_abs_logit=None, max_mean_kl=2e-3, min_top1=0.98, greedy_must_match=False),
    ),
    "int4": Quantization(
        "int4", "weight-only int4 MatMulNBits, symmetric blocks of export.onnx_block_size, fp32 activations",
        ParityThresholds(max_abs_logit=None, max_mean_kl=5e-2, min_top1=0.80, greedy_must_match=False),
    ),
}

GGUF_QUANTIZATIONS: dict[str, Quantization] = {
    "f32": Quantization("f32", "fp32 weights", LOSSLESS_FP32, "F32"),
    "f16": Quantization(
        "f16", "fp16 weights (norms fp32)",
        ParityThresholds(max_abs_logit=5e-2, max_mean_kl=1e-3, min_top1=0.99, greedy_must_match=True), "F16",
    ),
    "q8_0": Quantization(
        "q8_0", "8-bit blocks of 32 with an fp16 scale",
        ParityThresholds(max_abs_logit=None, max_mean_kl=2e-2, min_top1=0.97, greedy_must_match=False), "Q8_0",
    ),
    "q4_0": Quantization(
        "q4_0", "4-bit blocks of 32 with an fp16 scale",
        ParityThresholds(max_abs_logit=None, max_mean_kl=1e-1, min_top1=0.78, greedy_must_match=False), "Q4_0",
    ),
    # k-quants (super-blocks of 256): written by llama.cpp's own quantizer from an f32 GGUF
    "q6_k": Quantization(
        "q6_k", "6-bit k-quant (llama.cpp Q6_K)",
        ParityThresholds(max_abs_logit=None, max_mean_kl=1e-2, min_top1=0.94, greedy_must_match=False),
        llama_ftype="LLAMA_FTYPE_MOSTLY_Q6_K", row_multiple=256,
    ),
    "q5_k_m": Quantization(
        "q5_k_m", "5-bit k-quant mix (llama.cpp Q5_K_M: Q5_K, some tensors Q6_K)",
        ParityThresholds(max_abs_logit=None, max_mean_kl=1e-2, min_top1=0.94, greedy_must_match=False),
        llama_ftype="LLAMA_FTYPE_MOSTLY_Q5_K_M", row_multiple=256,
    ),
    "q4_k_m": Quantization(
        "q4_k_m", "4-bit k-quant mix (llama.cpp Q4_K_M: Q4_K, attn_v/ffn_down partly Q6_K)",
        ParityThresholds(max_abs_logit=None, max_mean_kl=3e-2, min_top1=0.90, greedy_must_match=False),
        llama_ftype="LLAMA_FTYPE_MOSTLY_Q4_K_M", row_multiple=256,
    ),
}
# the per-tensor types a k-quant file may hold for its 2-D weights; anything else is
# llama.cpp's silent fallback (q4_K -> q5_0, q6_K -> q8_0 for rows it cannot block)
K_QUANT_TYPES = {"q6_k": {"Q6_K"}, "q5_k_m": {"Q5_K", "Q6_K"}, "q4_k_m": {"Q4_K", "Q6_K"}}

FORMATS: dict[str, dict[str, Quantization]] = {"onnx": ONNX_QUANTIZATIONS, "gguf": GGUF_QUANTIZATIONS}
