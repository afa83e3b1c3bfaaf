"""Training/calibration text: load, tokenize, pack into fixed-length sequences, split."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from edgedistill.errors import UserError
from edgedistill.json_files import parse_rows
from edgedistill.runtime.chat import CHAT_TEMPLATES

if TYPE_CHECKING:
    import torch

DATA_SUFFIXES = (".txt", ".jsonl")  # a .jsonl file holds one row per line (see ROW_FORMATS)
_DEMO_DATA = Path(__file__).with_name("demo") / "data"
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
    if path.is_dir() and not _files_in(path) and not is_hf_dataset(path):
        raise UserError(f"{key} folder '{spec}' holds no .txt or .jsonl files and is no saved HF dataset")
    return path


def _files_in(folder: Path) -> list[Path]:
    return sorted(file for pattern in DATA_SUFFIXES for file in folder.rglob(f"*{pattern}") if file.is_file())


# Row formats (JSONL rows and HF dataset rows alike); text files are "text" rows.
ROW_FORMATS = ("text", "prompt/response", "messages")


def load_rows(spec: str, key: str = "data.path", split: str = "train") -> list[dict]:
    """The rows of a data source, each validated to be one of :data:`ROW_FORMATS`.

    Text files give one ``{"text": ...}`` row per file; JSONL files one row per line; a
    folder written by ``datasets`` ``save_to_disk`` gives its rows (``split`` of a
    DatasetDict); the builtin Python-documentation splits one row per page.
    """
    if spec in BUILTIN_CORPORA and BUILTIN_CORPORA[spec][1]:
        from edgedistill.demo.pydocs import texts

        return [{"text": text} for text in texts(BUILTIN_CORPORA[spec][1])]
    path = resolve_data_path(spec, key)
    if path.is_dir() and is_hf_dataset(path):
        return _hf_dataset_rows(path, key, split)
    rows = []
    for file in data_files(spec, key):
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError(f"data file {file} is not UTF-8 text; convert it or leave it out of {key}") from None
        if file.suffix == ".jsonl":
            rows.extend(check_row(row, f"{key} file {file} line {number}") for number, row in parse_rows(text, f"{key} file {file}"))
        else:
            rows.append({"text": text})
    return rows


def load_documents(spec: str, key: str = "data.path") -> list[str]:
    """One plain text per row (prompt and response joined; chat contents joined by blank
    lines), for evaluation text and calibration."""
    return [row_text(row) for row in load_rows(spec, key)]


def row_text(row: dict) -> str:
    if "text" in row:
        return row["text"]
    if "prompt" in row:
        return row["prompt"] + row["response"]
    return "\n\n".join(message["content"] for message in row["messages"])


def check_row(row, where: str) -> dict:
    """``row`` if it is a text, prompt/response or chat row; else a UserError at ``where``."""
    if isinstance(row, dict):
        if isinstance(row.get("text"), str):
            return row
        if isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str):
            return row
        messages = row.get("messages")
        if isinstance(messages, list) and messages and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
        ):
            return row
    found = ", ".join(sorted(map(str, row))) if isinstance(row, dict) else type(row).__name__
    raise UserError(f"{where} is not a data row (found: {found}); give a string 'text', string 'prompt' and "
                    "'response', or 'messages' as a list of {role, content}")


def is_hf_dataset(folder: Path) -> bool:
    """A folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    return (folder / "dataset_info.json").is_file() or (folder / "dataset_dict.json").is_file()


def _hf_dataset_rows(folder: Path, key: str, split: str) -> list[dict]:
    import datasets

    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise UserError(f"{key} dataset {folder} has splits {', '.join(loaded)}, not '{split}'")
        loaded = loaded[split]
    return [check_row(row, f"{key} dataset {folder} row {index}") for index, row in enumerate(loaded)]


def data_files(spec: str, key: str = "data.path") -> list[Path]:
    """The files behind ``data.path``, sorted by path: text / JSONL files, or every file of
    a saved HF dataset (they all make its content hash)."""
    path = resolve_data_path(spec, key)
    if path.is_file():
        return [path]
    return sorted(f for f in path.rglob("*") if f.is_file()) if is_hf_dataset(path) else _files_in(path)


def token_stream(docs: list[str], tokenizer, max_tokens: int = 0) -> list[int]:
    """Documents tokenized without BOS and joined by EOS (the layout every stage trains on),
    cut at ``max_tokens`` (0 = all; later documents are then not tokenized at all)."""
    return example_stream([{"text": text} for text in docs], tokenizer, max_tokens)[0]


def windows(stream: list[int] | list[bool], seq_len: int, limit: int | None = None, prefix: int | bool | None = None):
    """Consecutive non-overlapping (N, seq_len) LongTensor windows; the ragged tail is dropped.

    ``prefix``: a value every window starts with (the BOS id, see :func:`window_bos`); the
    stream then fills the other seq_len - 1 positions of each window."""
    import torch

    body = seq_len - (prefix is not None)
    count = len(stream) // body
    if limit is not None:
        count = min(count, limit)
    cut = torch.tensor(stream[: count * body], dtype=torch.long).view(count, body)
    if prefix is None:
        return cut
    return torch.cat([torch.full((count, 1), int(prefix), dtype=torch.long), cut], dim=1)


def window_bos(tokenizer) -> int | None:
    """The BOS id every window starts with, for tokenizers that put BOS before a text
    (Gemma, Llama 3): such models are trained with it at position 0 and degrade without it
    (Gemma 3 270M on Python docs windows: perplexity 26 with BOS, 189 without). None when
    the tokenizer adds no BOS (GPT-2 style, SmolLM2, the demo teachers)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return None
    with_specials = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bos if with_specials[:1] == [bos] and tokenizer("a", add_special_tokens=False)["input_ids"][:1] != [bos] else None


def eval_windows(spec: str, tokenizer, seq_len: int, max_windows: int = 0):
    """Held-out evaluation windows (N, seq_len) of ``spec``, in document order (no shuffle):
    documents joined by EOS and cut into consecutive windows, at most ``max_windows`` (0 = all)."""
    stream = token_stream(load_documents(spec, "bench.eval_path"), tokenizer)
    found = windows(stream, seq_len, limit=max_windows or None, prefix=window_bos(tokenizer))
    if len(found) == 0:
        raise UserError(f"bench.eval_path '{spec}' gives {len(stream)} tokens: less than one window of {seq_len}")
    return found


class Packed(NamedTuple):
    """Packed training windows: ``ids`` (N, L) token ids and ``targets`` (N, L) bool, True
    where the token is a training target (False for prompt and non-assistant chat tokens)."""

    ids: "torch.Tensor"
    targets: "torch.Tensor"

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index) -> "Packed":
        return Packed(self.ids[index], self.targets[index])


def next_token_labels(ids, targets, ignore_index: int = -100):
    """(B, L-1) labels for positions 0..L-2: the next token where it is a target, else ignored."""
    import torch

    return torch.where(targets[:, 1:], ids[:, 1:], torch.full_like(ids[:, 1:], ignore_index))


def encode_row(row: dict, tokenizer, chat_template: str = "") -> tuple[list[int], list[bool]]:
    """Token ids of one row, ending with EOS, and which of them are training targets.

    text: every token; prompt/response: the response tokens and EOS (the prompt is
    context only); messages: the assistant turns' tokens (after each turn's generation
    header) and, when the chat ends with the assistant, EOS.
    """
    eos = tokenizer.eos_token_id
    if "text" in row:
        ids = tokenizer(row["text"], add_special_tokens=False)["input_ids"] + [eos]
        return ids, [True] * len(ids)
    if "prompt" in row:
        prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        response = tokenizer(row["response"], add_special_tokens=False)["input_ids"] + [eos]
        return prompt + response, [False] * len(prompt) + [True] * len(response)
    return _encode_chat(row["messages"], tokenizer, chat_template)


def _encode_chat(messages: list[dict], tokenizer, chat_template: str) -> tuple[list[int], list[bool]]:
    template = CHAT_TEMPLATES.get(chat_template, chat_template) or tokenizer.chat_template
    if not template:
        raise UserError("data has chat 'messages' rows but the tokenizer has no chat template; set data.chat_template "
                        f"to a Jinja template or one of: {', '.join(CHAT_TEMPLATES)}")

    def render(upto: int, generation_prompt: bool = False) -> str:
        if upto == 0 and not generation_prompt:
            return ""
        return tokenizer.apply_chat_template(messages[:upto], chat_template=template, tokenize=False,
                                             add_generation_prompt=generation_prompt)

    text, spans = render(len(messages)), []
    for index, message in enumerate(messages):
        before, after = render(index), render(index + 1)
        if not (text.startswith(after) and after.startswith(before)):
            raise UserError("the chat template does not render a conversation as its turns in order "
                            "(each prefix of the messages must render as a prefix of the text); use another data.chat_template")
        if message["role"] == "assistant":
            header = render(index, generation_prompt=True) if index else ""
            start = len(header) if header.startswith(before) and after.startswith(header) else len(before)
            spans.append((start, len(after)))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    targets = [any(lo <= start < hi for lo, hi in spans) for start, _ in encoded["offset_mapping"]]
    ids.append(tokenizer.eos_token_id)
    targets.append(messages[-1]["role"] == "assistant")
    return ids, targets


def example_stream(rows: list[dict], tokenizer, max_tokens: int = 0, chat_template: str = "") -> tuple[list[int], list[bool]]:
    """Rows encoded (:func:`encode_row`) and joined: (ids, targets), cut at ``max_tokens``."""
    ids: list[int] = []
    targets: list[bool] = []
    for row in rows:
        row_ids, row_targets = encode_row(row, tokenizer, chat_template)
        ids.extend(row_ids)
        targets.extend(row_targets)
        if max_tokens and len(ids) >= max_tokens:
            return ids[:max_tokens], targets[:max_tokens]
    return ids, targets


def packed_examples(data_cfg, tokenizer, seed: int) -> tuple[Packed, Packed]:
    """(train, held-out) windows of ``data_cfg.seq_len`` with their target masks.

    Rows are encoded and joined (every row ends with EOS), the stream is cut into full
    windows (the ragged tail is dropped; each window opens with BOS where the tokenizer
    adds one, :func:`window_bos`), windows with no target after their first token
    are dropped, the rest are shuffled with ``seed`` and the last ``validation_fraction``
    of them (at least one) are held out.
    """
    import torch

    rows = load_rows(data_cfg.path, split=data_cfg.split)
    ids, targets = example_stream(rows, tokenizer, data_cfg.max_tokens, data_cfg.chat_template)
    bos = window_bos(tokenizer)  # a BOS-trained model sees BOS at position 0 of every window
    packed = Packed(windows(ids, data_cfg.seq_len, prefix=bos),
                    windows(targets, data_cfg.seq_len, prefix=None if bos is None else False).bool())
    packed = packed[packed.targets[:, 1:].any(dim=1)]
    if len(packed) < 2:
        raise UserError(f"data.path '{data_cfg.path}' gives {len(ids)} tokens: fewer than two sequences of "
                        f"data.seq_len={data_cfg.seq_len} with training targets")
    packed = packed[torch.randperm(len(packed), generator=torch.Generator().manual_seed(seed))]
    held_out = max(1, int(len(packed) * data_cfg.validation_fraction))
    return packed[:-held_out], packed[-held_out:]


def packed_sequences(data_cfg, tokenizer, seed: int):
    """The token ids of :func:`packed_examples`: (train (N, L), held-out (M, L)) LongTensors."""
    train, heldout = packed_examples(data_cfg, tokenizer, seed)
    return train.ids, heldout.ids
