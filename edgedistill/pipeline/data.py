"""Training/calibration text: load, tokenize, pack into fixed-length sequences, split."""

from __future__ import annotations

import json
from pathlib import Path

from edgedistill.errors import UserError

DATA_SUFFIXES = (".txt", ".jsonl")  # a .jsonl file holds one document per row, in its "text" field
_DEMO_DATA = Path(__file__).parents[1] / "demo" / "data"
# builtin name -> (file under demo/data, pydocs split or None for a plain text file)
BUILTIN_CORPORA = {
    "builtin:tiny-corpus": ("tiny_corpus.txt", None),
    "builtin:pydocs": ("pydocs/train.jsonl.gz", "train"),
    "builtin:pydocs-validation": ("pydocs/validation.jsonl.gz", "validation"),
    "builtin:pydocs-test": ("pydocs/test.jsonl.gz", "test"),
}


def resolve_data_path(spec: str, key: str = "data.path") -> Path:
    """The file or folder behind a ``data.path`` value; raises UserError (naming ``key``) when missing."""
    if spec in BUILTIN_CORPORA:
        return _DEMO_DATA / BUILTIN_CORPORA[spec][0]
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(
            f"{key} '{spec}' does not exist; give a text or JSONL file, a folder of them, or one of: {', '.join(BUILTIN_CORPORA)}"
        )
    if path.is_dir() and not _files_in(path):
        raise UserError(f"{key} folder '{spec}' holds no .txt or .jsonl files")
    return path


def _files_in(folder: Path) -> list[Path]:
    return sorted(file for pattern in DATA_SUFFIXES for file in folder.rglob(f"*{pattern}") if file.is_file())


def load_documents(spec: str, key: str = "data.path") -> list[str]:
    """Documents of the data source: one per file, files sorted by path; for the builtin
    Python-documentation splits, one per documentation page."""
    if spec in BUILTIN_CORPORA and BUILTIN_CORPORA[spec][1]:
        from edgedistill.demo.pydocs import texts

        return texts(BUILTIN_CORPORA[spec][1])
    documents = []
    for file in data_files(spec, key):
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError(f"data file {file} is not UTF-8 text; convert it or leave it out of {key}") from None
        documents.extend(_jsonl_texts(file, text, key) if file.suffix == ".jsonl" else [text])
    return documents


def jsonl_rows(file: Path, text: str, key: str):
    """(line number, parsed row) for each non-blank line of a JSONL file's ``text``; a line
    that is not JSON is a UserError naming ``key``, the file and the line."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{key} file {file} line {number} is not JSON; write one object per line") from None


def _jsonl_texts(file: Path, text: str, key: str) -> list[str]:
    """One document per JSONL row, from its ``text`` field (blank lines are skipped)."""
    documents = []
    for number, row in jsonl_rows(file, text, key):
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            found = ", ".join(sorted(row)) if isinstance(row, dict) else type(row).__name__
            raise UserError(f"{key} file {file} line {number} has no string 'text' field (found: {found}); "
                            "prompt/response and chat rows are not supported yet, join them into 'text'")
        documents.append(row["text"])
    return documents


def data_files(spec: str, key: str = "data.path") -> list[Path]:
    """The text / JSONL files behind ``data.path``, sorted by path."""
    path = resolve_data_path(spec, key)
    return [path] if path.is_file() else _files_in(path)


def token_stream(docs: list[str], tokenizer, max_tokens: int = 0) -> list[int]:
    """Documents tokenized without BOS and joined by EOS (the layout every stage trains on),
    cut at ``max_tokens`` (0 = all; later documents are then not tokenized at all)."""
    stream: list[int] = []
    for text in docs:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        stream.append(tokenizer.eos_token_id)
        if max_tokens and len(stream) >= max_tokens:
            return stream[:max_tokens]
    return stream


def windows(stream: list[int], seq_len: int, limit: int | None = None):
    """Consecutive non-overlapping (N, seq_len) LongTensor windows; the ragged tail is dropped."""
    import torch

    count = len(stream) // seq_len
    if limit is not None:
        count = min(count, limit)
    return torch.tensor(stream[: count * seq_len], dtype=torch.long).view(count, seq_len)


def eval_windows(spec: str, tokenizer, seq_len: int, max_windows: int = 0):
    """Held-out evaluation windows (N, seq_len) of ``spec``, in document order (no shuffle):
    documents joined by EOS and cut into consecutive windows, at most ``max_windows`` (0 = all)."""
    stream = token_stream(load_documents(spec, "bench.eval_path"), tokenizer)
    found = windows(stream, seq_len, limit=max_windows or None)
    if len(found) == 0:
        raise UserError(f"bench.eval_path '{spec}' gives {len(stream)} tokens: less than one window of {seq_len}")
    return found


def packed_sequences(data_cfg, tokenizer, seed: int):
    """Token sequences of ``data_cfg.seq_len``: (train (N, L), validation (M, L)) LongTensors.

    Documents are joined with EOS, the stream is cut into full windows (the ragged tail is
    dropped), windows are shuffled with ``seed`` and the last ``validation_fraction`` of
    them (at least one) are held out.
    """
    import torch

    stream = token_stream(load_documents(data_cfg.path), tokenizer, data_cfg.max_tokens)
    packed = windows(stream, data_cfg.seq_len)  # (N, L)
    if len(packed) < 2:
        raise UserError(
            f"data.path '{data_cfg.path}' gives {len(stream)} tokens: fewer than two sequences of data.seq_len={data_cfg.seq_len}"
        )
    packed = packed[torch.randperm(len(packed), generator=torch.Generator().manual_seed(seed))]
    held_out = max(1, int(len(packed) * data_cfg.validation_fraction))
    return packed[:-held_out], packed[-held_out:]
