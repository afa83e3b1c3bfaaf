"""Parity gate: every exported artifact against the fp32 PyTorch student.

On fixed token ids (``PARITY_TEXTS`` tokenized and repeated to ``positions`` tokens) the
artifact's logits, computed through ``edgedistill.runtime``, are compared with torch's:
max |dlogit| relative to the reference's logit range (so one bound holds for a 64-wide toy
and a real model whose logits span 40 nats), mean KL(p_torch || p_artifact) per position
(nats, T=1), and top-1 agreement. Greedy continuations of each text's first tokens must match for lossless
formats, and the runtime's tokenizer must give the HF tokenizer's ids. Thresholds come
from ``formats.py`` and are written into the result next to the measured values.

Ties: where the reference's best token and the artifact's choice are within
``TIE_RELATIVE_MARGIN`` of that position's logit range in the reference, the two are a tie
that any float format (f16 weights, another summation order) may break either way; the
artifact's pick then counts as agreeing (top-1), and a greedy continuation that parts
there counts as matching. How often that happened is reported (``top1_ties``,
``greedy_ties``), so a tie is never hidden. Measured: a 300-step tiny Qwen2 in f16 parts
from torch at a position whose top two logits are 0.0026 apart in a range of 11.6
(2.3e-4 of it); the f16 error there is 0.0037.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from edgedistill.exporters.formats import FORMATS

PARITY_TEXTS = (
    "The json module exposes an API familiar to users of the standard library marshal and pickle modules.",
    "Return a new path with the suffix changed. If the original path doesn't have a suffix, the new suffix is appended.",
    "def parse(argv=None):\n    parser = argparse.ArgumentParser(description='Process some integers.')\n",
)
TOKENIZER_TEXTS = PARITY_TEXTS + ("Unicode: café, naïve, 東京 — tabs\tand  spaces.", "end of text<|eos|>next")
GREEDY_PROMPT_TOKENS = 8
TIE_RELATIVE_MARGIN = 1e-3  # of a position's logit range in the reference


def _opening(tokenizer) -> list[int]:
    """BOS where the tokenizer adds one: the model is checked on text as it runs it (Gemma
    without BOS at position 0 is another, far less stable model)."""
    from edgedistill.data import window_bos

    bos = window_bos(tokenizer)
    return [] if bos is None else [bos]


def parity_token_ids(tokenizer, positions: int) -> list[list[int]]:
    """One id list of exactly ``positions`` tokens per parity text (BOS where the tokenizer
    adds one, then the text repeated)."""
    sequences = []
    for text in PARITY_TEXTS:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        sequences.append((_opening(tokenizer) + ids * (positions // len(ids) + 1))[:positions])
    return sequences


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def is_tie(reference_row: np.ndarray, token: int) -> bool:
    """Whether ``token`` is within ``TIE_RELATIVE_MARGIN`` of the row's logit range of the
    reference's best logit (the best token itself always is)."""
    best, low = float(reference_row.max()), float(reference_row.min())
    return float(reference_row[token]) >= best - TIE_RELATIVE_MARGIN * (best - low)


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """(T, V) reference vs (T, V) candidate -> max |d|, max |d| / (max - min of the reference),
    mean KL(ref || cand), top-1 agreement (the candidate's argmax is the reference's, or ties
    with it: :func:`is_tie`) and the count of positions that agreed only by a tie."""
    ref_logprobs, cand_logprobs = log_softmax(reference), log_softmax(candidate)
    kl = (np.exp(ref_logprobs) * (ref_logprobs - cand_logprobs)).sum(axis=-1)  # (T,)
    max_abs = float(np.abs(reference - candidate).max())
    logit_range = float(reference.max() - reference.min())
    picks = candidate.argmax(-1)
    exact = reference.argmax(-1) == picks
    agree = np.array([same or is_tie(row, int(pick)) for row, pick, same in zip(reference, picks, exact)])
    return {
        "max_abs_logit_diff": max_abs,
        "logit_range": logit_range,
        "max_rel_logit_diff": max_abs / logit_range if logit_range > 0 else math.inf,
        "mean_kl": float(kl.mean()),
        "top1_agreement": float(agree.mean()),
        "top1_ties": int((agree & ~exact).sum()),
    }


def greedy_agrees(model, prompt_ids: list[int], expected: list[int], got: list[int], eos_token_id: int | None) -> str:
    """"same", "tie" (the continuations part where the reference's next-token logits tie
    the artifact's pick with its own, :func:`is_tie`; what follows cannot be compared), or
    "differs". A continuation that ended is read as choosing EOS there."""
    if got == expected:
        return "same"
    step = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
    chosen = got[step] if step < len(got) else eos_token_id
    if chosen is None:
        return "differs"
    row = torch_logits(model, prompt_ids + expected[:step])[-1]
    return "tie" if is_tie(row, int(chosen)) else "differs"


def torch_logits(model, token_ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor([token_ids])).logits[0].float().numpy()  # (T, V)


def torch_greedy(model, prompt_ids: list[int], max_tokens: int, eos_token_id: int | None) -> list[int]:
    """Greedy continuation with the KV cache, stopping at EOS like the runtime does."""
    import torch

    generated: list[int] = []
    past, inputs = None, torch.tensor([prompt_ids])
    with torch.no_grad():
        for _ in range(max_tokens):
            out = model(inputs, past_key_values=past, use_cache=True)
            token = int(out.logits[0, -1].argmax())
            if token == eos_token_id:
                break
            generated.append(token)
            past, inputs = out.past_key_values, torch.tensor([[token]])
    return generated


def check_artifact(student, tokenizer, path: Path, fmt: str, quantization: str, verify_cfg) -> dict:
    """Measure one artifact and judge it against its format's thresholds. An artifact the
    runtime refuses to load (damaged, truncated) fails the gate with the runtime's one-line
    reason and no measurements, instead of stopping the stage."""
    from edgedistill.runtime import load

    thresholds = FORMATS[fmt][quantization].thresholds
    try:
        runtime_model = load(path)
    except ValueError as exc:
        return {"thresholds": dataclasses.asdict(thresholds), "device_ready": False,
                "failures": [f"the runtime cannot load it: {exc}"]}
    measured = [compare_logits(torch_logits(student, ids), runtime_model.logits(ids))
                for ids in parity_token_ids(tokenizer, verify_cfg.positions)]
    result = {
        "max_abs_logit_diff": max(m["max_abs_logit_diff"] for m in measured),
        "logit_range": min(m["logit_range"] for m in measured),
        "max_rel_logit_diff": max(m["max_rel_logit_diff"] for m in measured),
        "mean_kl": float(np.mean([m["mean_kl"] for m in measured])),
        "top1_agreement": float(np.mean([m["top1_agreement"] for m in measured])),
        "top1_ties": sum(m["top1_ties"] for m in measured),
        "greedy_match": True,
        "greedy_ties": 0,
        "tokenizer_match": all(
            runtime_model.encode(text) == tokenizer(text, add_special_tokens=False)["input_ids"] for text in TOKENIZER_TEXTS
        ),
    }
    eos = tokenizer.eos_token_id
    for text in PARITY_TEXTS:
        prompt = (_opening(tokenizer) + tokenizer(text, add_special_tokens=False)["input_ids"])[:GREEDY_PROMPT_TOKENS]
        expected = torch_greedy(student, prompt, verify_cfg.greedy_tokens, eos)
        got = runtime_model.generate(prompt, max_tokens=verify_cfg.greedy_tokens).tokens
        verdict = greedy_agrees(student, prompt, expected, got, eos)
        result["greedy_match"] = result["greedy_match"] and verdict != "differs"
        result["greedy_ties"] += verdict == "tie"
    failures = judge(result, thresholds)
    return {**result, "thresholds": dataclasses.asdict(thresholds), "device_ready": not failures, "failures": failures}


def judge(result: dict, thresholds) -> list[str]:
    """Human-readable reasons an artifact fails its thresholds (empty list = passes).

    Comparisons are written so that NaN fails them: a NaN logit is never "within" a bound.
    """
    failures = []
    if not all(math.isfinite(result[key]) for key in ("max_rel_logit_diff", "mean_kl", "top1_agreement")):
        failures.append("non-finite logits or metrics (NaN/inf) from the artifact")
    if thresholds.max_rel_logit is not None and not result["max_rel_logit_diff"] <= thresholds.max_rel_logit:
        failures.append(f"max |dlogit| {result['max_abs_logit_diff']:.3g} is {result['max_rel_logit_diff']:.3g} of the "
                        f"logit range {result['logit_range']:.3g} > {thresholds.max_rel_logit:g}")
    if not result["mean_kl"] <= thresholds.max_mean_kl:
        failures.append(f"mean KL {result['mean_kl']:.3g} > {thresholds.max_mean_kl:g}")
    if not result["top1_agreement"] >= thresholds.min_top1:
        failures.append(f"top-1 agreement {result['top1_agreement']:.4f} < {thresholds.min_top1:g}")
    if thresholds.greedy_must_match and not result["greedy_match"]:
        failures.append("greedy continuation differs from the PyTorch student")
    if not result["tokenizer_match"]:
        failures.append("runtime tokenizer ids differ from the HF tokenizer")
    return failures
