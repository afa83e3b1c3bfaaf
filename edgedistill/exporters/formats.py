"""Registries of export formats, quantization types and their parity thresholds.

Pure data (no torch, no onnx): the recipe validator, the exporters, the parity gate and
the runtime all read these tables. Adding a quantization type means adding a row.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParityThresholds:
    """What an artifact must meet against the fp32 PyTorch student on fixed token ids.

    ``max_rel_logit``: bound on max |logit_torch - logit_artifact| divided by the torch
    logits' range (max - min over the compared positions and vocabulary) of the same
    text; None: recorded only. Relative, because the same fp16 rounding moves a logit
    of a real model spanning 40 nats by 0.09 and one of a toy spanning 10 by 0.01.
    ``max_mean_kl``: bound on mean KL(p_torch || p_artifact) per position, nats.
    ``min_top1``: least fraction of positions whose argmax agrees.
    ``greedy_must_match``: the greedy continuation of each prompt must be identical.
    """

    max_rel_logit: float | None
    max_mean_kl: float
    min_top1: float
    greedy_must_match: bool


@dataclass(frozen=True)
class TensorMix:
    """Which GGML type each 2-D weight of a GGUF file gets (llama.cpp's per-tensor recipe).

    ``base``: every weight not named below. ``output``: the output projection (the token
    embedding when it is tied, since it then is the output projection). ``more_bits``:
    attn_v and ffn_down of the layers ``use_more_bits`` picks (the first and last eighth
    and every third layer between: llama.cpp's ``_M`` types). 1-D tensors stay F32.
    """

    base: str
    output: str | None = None
    more_bits: str | None = None

    def type_for(self, gguf_name: str, layer: int | None, n_layers: int, tied: bool) -> str:
        if gguf_name == "output.weight" or (tied and gguf_name == "token_embd.weight"):
            return self.output or self.base
        if self.more_bits and layer is not None and gguf_name.split(".")[2] in ("attn_v", "ffn_down") \
                and use_more_bits(layer, n_layers):
            return self.more_bits
        return self.base


def use_more_bits(layer: int, n_layers: int) -> bool:
    """llama.cpp's layer choice for the extra bits of its ``_M`` mixes (integer division as in C)."""
    eighth = n_layers // 8
    return layer < eighth or layer >= 7 * n_layers // 8 or (layer - eighth) % 3 == 2


# What llama.cpp's quantizer writes instead of a type whose blocks do not divide a row
# (k-quants block 256 input channels, the others 32): llama_tensor_get_type's fallback.
GGML_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "Q4_0": "F16", "Q5_0": "F16", "Q5_1": "F16",
                 "Q8_0": "F16"}


@dataclass(frozen=True)
class Quantization:
    name: str
    description: str
    thresholds: ParityThresholds
    mix: TensorMix | None = None  # GGUF only: the per-tensor GGML types
    file_type: str | None = None  # GGUF only: gguf.LlamaFileType member written as general.file_type
    importance: bool = False  # GGUF only: quantize with an importance matrix from calibration text


# Thresholds are set on real weights: SmolLM2-135M-Instruct (the builtin teacher; logits
# span 64 nats on the parity texts) with the committed docs-assistant teacher as a second
# point, quantized with the importance matrix of 8,192 pydocs tokens, with margin over the
# values measured (docs/export.md: thresholds set on real weights). SmolLM2's 576-wide rows cannot hold
# k-quant super-blocks, so its q4_k_m/q5_k_m/q6_k fall back to Q5_0/Q5_1/Q8_0 for most
# tensors, as llama.cpp's would. A broken export (a wrong Q/K permutation, a 4-bit file
# without the mix and the importance matrix: mean KL 0.31 on SmolLM2) fails the KL bound.
LOSSLESS_FP32 = ParityThresholds(max_rel_logit=1e-4, max_mean_kl=1e-6, min_top1=1.0, greedy_must_match=True)

ONNX_QUANTIZATIONS: dict[str, Quantization] = {
    "fp32": Quantization("fp32", "fp32 weights, KV cache inputs/outputs", LOSSLESS_FP32),
    "int8": Quantization(
        "int8", "weight-only int8 MatMulNBits, symmetric blocks of export.onnx_block_size, fp32 activations",
        ParityThresholds(max_rel_logit=None, max_mean_kl=5e-3, min_top1=0.97, greedy_must_match=False),
    ),
    "int4": Quantization(
        "int4", "weight-only int4 MatMulNBits, blocks of export.onnx_block_size with scale and zero point fitted by HQQ, "
        "fp32 activations",
        ParityThresholds(max_rel_logit=None, max_mean_kl=5e-2, min_top1=0.85, greedy_must_match=False),
    ),
    "int8_dynamic": Quantization(
        "int8_dynamic", "int8 MatMul weights per output channel, activations quantized at run time (dynamic); "
        "loses quality on real activations (SmolLM2: mean KL 0.49)",
        ParityThresholds(max_rel_logit=None, max_mean_kl=1e-2, min_top1=0.92, greedy_must_match=False),
    ),
}

GGUF_QUANTIZATIONS: dict[str, Quantization] = {
    "f32": Quantization("f32", "fp32 weights", LOSSLESS_FP32, TensorMix("F32"), "ALL_F32"),
    "f16": Quantization(
        "f16", "fp16 weights (norms fp32)",
        ParityThresholds(max_rel_logit=5e-3, max_mean_kl=1e-3, min_top1=0.99, greedy_must_match=True),
        TensorMix("F16"), "MOSTLY_F16",
    ),
    "q8_0": Quantization(
        "q8_0", "8-bit blocks of 32 with an fp16 scale",
        # measured: SmolLM2 4.2e-3 / 0.969, Gemma 3 270M (with its BOS) 1.8e-3 / 0.990
        ParityThresholds(max_rel_logit=None, max_mean_kl=1e-2, min_top1=0.95, greedy_must_match=False),
        TensorMix("Q8_0"), "MOSTLY_Q8_0",
    ),
    "q4_0": Quantization(
        "q4_0", "4-bit blocks of 32 with an fp16 scale; output projection Q6_K (as llama.cpp's Q4_0) and the _M "
        "types' attn_v/ffn_down layers Q5_0; importance-weighted",
        ParityThresholds(max_rel_logit=None, max_mean_kl=0.15, min_top1=0.85, greedy_must_match=False),
        TensorMix("Q4_0", output="Q6_K", more_bits="Q5_0"), "MOSTLY_Q4_0", importance=True,
    ),
    "q6_k": Quantization(
        "q6_k", "6-bit k-quant (llama.cpp Q6_K), importance-weighted",
        ParityThresholds(max_rel_logit=None, max_mean_kl=2e-2, min_top1=0.94, greedy_must_match=False),
        TensorMix("Q6_K"), "MOSTLY_Q6_K", importance=True,
    ),
    "q5_k_m": Quantization(
        "q5_k_m", "5-bit k-quant mix (llama.cpp Q5_K_M: Q5_K, output and some attn_v/ffn_down Q6_K), importance-weighted",
        ParityThresholds(max_rel_logit=None, max_mean_kl=3e-2, min_top1=0.93, greedy_must_match=False),
        TensorMix("Q5_K", output="Q6_K", more_bits="Q6_K"), "MOSTLY_Q5_K_M", importance=True,
    ),
    "q4_k_m": Quantization(
        "q4_k_m", "4-bit k-quant mix (llama.cpp Q4_K_M: Q4_K, output and some attn_v/ffn_down Q6_K), importance-weighted",
        ParityThresholds(max_rel_logit=None, max_mean_kl=8e-2, min_top1=0.88, greedy_must_match=False),
        TensorMix("Q4_K", output="Q6_K", more_bits="Q6_K"), "MOSTLY_Q4_K_M", importance=True,
    ),
}

FORMATS: dict[str, dict[str, Quantization]] = {"onnx": ONNX_QUANTIZATIONS, "gguf": GGUF_QUANTIZATIONS}
