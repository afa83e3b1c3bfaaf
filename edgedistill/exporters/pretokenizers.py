"""Byte-level BPE pre-tokenizers: a ``tokenizer.json`` pre-tokenizer <-> llama.cpp's name for it.

llama.cpp does not read a tokenizer's regexes from the GGUF file; ``tokenizer.ggml.pre``
names one of the pre-tokenizers compiled into it. Each row here is the Hugging Face
pre-tokenizer that the named llama.cpp one reproduces (checked id for id against
llama.cpp in ``tests/exporters/test_pretokenizers.py``). The GGUF writer maps a
tokenizer.json onto a row, the GGUF teacher import maps a row back into tokenizer.json.
"""

from __future__ import annotations

import json

from edgedistill.errors import UserError

GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _byte_level(use_regex: bool) -> dict:
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": use_regex}


def _split(regex: str) -> dict:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


# llama.cpp tokenizer.ggml.pre -> the tokenizer.json pre_tokenizer it reproduces
PRE_TOKENIZERS: dict[str, dict] = {
    "gpt-2": _byte_level(True),
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _byte_level(True)]},
    "llama-bpe": {"type": "Sequence", "pretokenizers": [_split(LLAMA3_REGEX), _byte_level(False)]},
    "qwen2": {"type": "Sequence", "pretokenizers": [_split(QWEN2_REGEX), _byte_level(False)]},
}


def _steps(pre: dict | None) -> list[tuple]:
    """The pre-tokenizer as comparable steps; options that do not change the ids (offset
    trimming) are left out."""
    if not pre:
        return []
    if pre.get("type") == "Sequence":
        return [step for part in pre.get("pretokenizers", []) for step in _steps(part)]
    kind = pre.get("type")
    if kind == "ByteLevel":
        return [("ByteLevel", bool(pre.get("add_prefix_space")), bool(pre.get("use_regex", True)))]
    if kind == "Split":
        pattern = pre.get("pattern") or {}
        return [("Split", pattern.get("Regex", pattern.get("String")), pre.get("behavior"), bool(pre.get("invert")))]
    if kind == "Digits":
        return [("Digits", bool(pre.get("individual_digits")))]
    return [(kind, json.dumps(pre, sort_keys=True))]


def _describe(step: tuple) -> str:
    if step[0] == "Split":
        return f"Split(regex {step[1]!r}, {step[2]})"
    if step[0] == "ByteLevel":
        return f"ByteLevel(add_prefix_space={step[1]}, use_regex={step[2]})"
    return f"{step[0]}({', '.join(map(str, step[1:]))})"


def llama_cpp_pre_tokenizer(pre: dict | None, source: str = "tokenizer.json") -> str:
    """The llama.cpp pre-tokenizer name that reproduces ``pre`` (a tokenizer.json
    ``pre_tokenizer``); UserError naming the first part that no llama.cpp one has."""
    steps = _steps(pre)
    for name, candidate in PRE_TOKENIZERS.items():
        if _steps(candidate) == steps:
            return name
    # the first step that no row starts with names what has no equivalent
    for index, step in enumerate(steps):
        if not any(_steps(c)[:index + 1] == steps[:index + 1] for c in PRE_TOKENIZERS.values()):
            part = _describe(step)
            break
    else:
        part = " + ".join(map(_describe, steps)) or "none"
    raise UserError(f"{source}: pre-tokenizer part {part} has no llama.cpp equivalent (GGUF knows "
                    f"{', '.join(PRE_TOKENIZERS)}); export ONNX only (export.gguf=[])")


def hf_pre_tokenizer(name: str) -> dict | None:
    """The tokenizer.json pre_tokenizer for llama.cpp's ``name``, or None when not in the table."""
    return json.loads(json.dumps(PRE_TOKENIZERS[name])) if name in PRE_TOKENIZERS else None
