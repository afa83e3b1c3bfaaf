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
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    special = _special_tokens(reader, tokens)
    bos = special.get("bos_token")
    if _field(reader, "tokenizer.ggml.add_bos_token", False) and bos is not None:
        rebuilt["post_processor"] = {"type": "TemplateProcessing",
                                     "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                                     "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                              {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                                     "special_tokens": {bos: {"id": bos, "ids": [tokens.index(bos)], "tokens": [bos]}}}
    elif (rebuilt.get("post_processor") or {}).get("type") == "TemplateProcessing":
        rebuilt["post_processor"] = None  # the file adds no BOS: neither may the HF tokenizer
    path.write_text(json.dumps(rebuilt, ensure_ascii=False), encoding="utf-8")
    _write_special_tokens(folder, special, bool(_field(reader, "tokenizer.ggml.add_bos_token", False)))


_SPECIAL_IDS = {"bos_token": "tokenizer.ggml.bos_token_id", "eos_token": "tokenizer.ggml.eos_token_id",
                "unk_token": "tokenizer.ggml.unknown_token_id", "pad_token": "tokenizer.ggml.padding_token_id"}


def _special_tokens(reader, tokens: list[str]) -> dict[str, str]:
    """{bos_token: text, ...} as the GGUF header names them (ids in range only)."""
    found = {}
    for name, key in _SPECIAL_IDS.items():
        index = _field(reader, key)
        if isinstance(index, int) and 0 <= index < len(tokens):
            found[name] = tokens[index]
    return found


def _write_special_tokens(folder: Path, special: dict[str, str], add_bos: bool) -> None:
    """tokenizer_config.json and special_tokens_map.json with the GGUF header's special
    tokens: transformers' GGUF conversion names SmolLM2's <|im_start|> as both BOS and EOS
    (the file says EOS is <|im_end|>), so documents would end with the wrong token."""
    config_path, map_path = folder / "tokenizer_config.json", folder / "special_tokens_map.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    config.update(special, add_bos_token=add_bos, add_eos_token=False)
    for name in _SPECIAL_IDS:
        config.pop(f"{name}_id", None)  # derived from the token texts on load
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    mapping = json.loads(map_path.read_text(encoding="utf-8")) if map_path.is_file() else {}
    mapping.update(special)
    map_path.write_text(json.dumps(mapping, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
