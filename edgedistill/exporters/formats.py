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


LOSSLESS_FP32 = ParityThresholds(max_abs_logit=1e-3, max_mean_kl=1e-6, min_top1=1.0, greedy_must_match=True)

ONNX_QUANTIZATIONS: dict[str, Quantization] = {
    "fp32": Quantization("fp32", "fp32 weights, KV cache inputs/outputs", LOSSLESS_FP32),
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
        ParityThresholds(max_abs_logit=None, max_mean_kl=2e-1, min_top1=0.85, greedy_must_match=False), "Q4_0",
    ),
}

FORMATS: dict[str, dict[str, Quantization]] = {"onnx": ONNX_QUANTIZATIONS, "gguf": GGUF_QUANTIZATIONS}
