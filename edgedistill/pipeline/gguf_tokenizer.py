"""A SentencePiece GGUF vocabulary as the tokenizer.json that reproduces llama.cpp's ids.

transformers converts a GGUF ``llama`` (SentencePiece) vocabulary to a Unigram model,
which segments by best total score (Viterbi). llama.cpp's SPM tokenizer instead merges,
over and over, the adjacent pair whose merged piece has the highest score, and falls back
to ``<0xNN>`` byte pieces: that is BPE with merges ranked by the merged piece's score. On
Gemma 3 the two disagree (Unigram: "re" "turn"; llama.cpp: "return"), so the imported
teacher would see different ids than its GGUF student. This module rebuilds the
tokenizer as that BPE, which is also how the original Gemma/Llama tokenizer.json are made.
"""

from __future__ import annotations

import json
from pathlib import Path

# GGUF token types (gguf.TokenType): what each becomes in tokenizer.json
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    return field.contents() if field is not None else default


def sentencepiece_merges(tokens: list[str], scores: list[float], types: list[int]) -> list[list[str]]:
    """Every split (left, right) of a NORMAL piece into two vocabulary pieces, ranked by the
    merged piece's score, highest first (llama.cpp merges the highest-scoring pair first)."""
    vocab = {token for token, kind in zip(tokens, types) if kind in (_NORMAL, _BYTE, _USER_DEFINED)}
    ranked = []
    for token, score, kind in zip(tokens, scores, types):
        if kind != _NORMAL or len(token) < 2:
            continue
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in vocab and right in vocab:
                ranked.append((-score, len(ranked), left, right))
    ranked.sort()
    return [[left, right] for _, _, left, right in ranked]


def sentencepiece_tokenizer_json(reader, post_processor: dict | None) -> dict:
    """tokenizer.json (BPE, byte fallback, ▁ for spaces) from a GGUF reader's vocabulary."""
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    scores = list(_field(reader, "tokenizer.ggml.scores", [0.0] * len(tokens)))
    types = list(_field(reader, "tokenizer.ggml.token_type", [_NORMAL] * len(tokens)))
    space_prefix = bool(_field(reader, "tokenizer.ggml.add_space_prefix", True))
    unk_id = _field(reader, "tokenizer.ggml.unknown_token_id")
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        vocab.setdefault(token, index)
    replace_space = {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
    normalizers = ([{"type": "Prepend", "prepend": "▁"}] if space_prefix else []) + [replace_space]
    decoders = [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}]
    if space_prefix:
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    added = [
        {"id": index, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": kind in (_CONTROL, _UNKNOWN)}
        for index, (token, kind) in enumerate(zip(tokens, types)) if kind in (_CONTROL, _UNKNOWN, _USER_DEFINED)
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": None,
        "post_processor": post_processor,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": tokens[unk_id] if unk_id is not None else None,
            "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
            "byte_fallback": True, "ignore_merges": False,
            "vocab": vocab, "merges": sentencepiece_merges(tokens, scores, types),
        },
    }


def fix_tokenizer(gguf_path: Path, folder: Path) -> None:
    """Make the folder's tokenizer.json split text as llama.cpp does on the GGUF file: a
    SentencePiece vocabulary (``tokenizer.ggml.model == "llama"``) is rebuilt as BPE; a
    byte-level one gets the pre-tokenizer that ``tokenizer.ggml.pre`` names (transformers
    writes the GPT-2 one whatever the file says)."""
    from gguf import GGUFReader

    from edgedistill.exporters.pretokenizers import hf_pre_tokenizer

    reader = GGUFReader(gguf_path)
    path = folder / "tokenizer.json"
    current = json.loads(path.read_text(encoding="utf-8"))
    if _field(reader, "tokenizer.ggml.model") == "llama":
        rebuilt = sentencepiece_tokenizer_json(reader, current.get("post_processor"))
    elif _field(reader, "tokenizer.ggml.model") == "gpt2":
        rebuilt = {**current, "pre_tokenizer": hf_pre_tokenizer(_field(reader, "tokenizer.ggml.pre", "default"))}
    else:
        return
    path.write_text(json.dumps(rebuilt, ensure_ascii=False), encoding="utf-8")
