"""What an HF-layout model folder says beside its weights: the tokens that end generation,
the special-token texts and the chat template.

The ONNX backend (students) and the torch backend (the teacher) both read it here, so a
student and its teacher stop on the same ids and render a chat to the same prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from edgedistill.json_files import read_json_object
from edgedistill.runtime.chat import ChatTemplate, template_from_tokenizer_config, template_source, token_text


@dataclass(frozen=True)
class FolderMetadata:
    end_token_ids: tuple[int, ...]  # generation_config.json's, then config.json's (Llama-3: end_of_text, eom, eot)
    bos_token: str
    eos_token: str
    chat_template: ChatTemplate | None

    @property
    def eos_token_id(self) -> int | None:
        return self.end_token_ids[0] if self.end_token_ids else None


def read_folder_metadata(path: Path, config: dict) -> FolderMetadata:
    """Metadata of the model folder ``path`` whose parsed config.json is ``config``."""
    tokenizer_config = _json_or_empty(path / "tokenizer_config.json")
    return FolderMetadata(
        end_token_ids=tuple(_ids(_generation_eos(path)) + _ids(config.get("eos_token_id"))),
        bos_token=token_text(tokenizer_config.get("bos_token")),
        eos_token=token_text(tokenizer_config.get("eos_token")),
        chat_template=template_from_tokenizer_config(tokenizer_config, _jinja_file_text(path)),
    )


def folder_template_source(path: Path) -> str | None:
    """The chat template text of model folder ``path`` (what the GGUF exporter embeds and
    :func:`read_folder_metadata` renders: one lookup)."""
    return template_source(_json_or_empty(path / "tokenizer_config.json"), _jinja_file_text(path))


def _jinja_file_text(path: Path) -> str | None:
    jinja_file = path / "chat_template.jinja"  # newer transformers save the template here instead of the config
    return jinja_file.read_text(encoding="utf-8") if jinja_file.is_file() else None


def _json_or_empty(file: Path) -> dict:
    return read_json_object(file) if file.is_file() else {}


def _generation_eos(path: Path):
    return _json_or_empty(path / "generation_config.json").get("eos_token_id")


def _ids(value) -> list[int]:
    """An ``eos_token_id`` field (an int, a list of ints or absent) as a list."""
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


class TokenizerJsonText:
    """encode/decode of a folder's ``tokenizer.json`` (``self.tokenizer``, a
    ``tokenizers.Tokenizer``) as every folder backend does it: no special tokens added on
    the way in, special tokens dropped on the way out."""

    tokenizer = None

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def special_prefix(self) -> tuple[int, ...]:
        """The ids the tokenizer's post-processor puts before a text (BOS, or nothing)."""
        plain = self.tokenizer.encode("a", add_special_tokens=False).ids
        full = self.tokenizer.encode("a", add_special_tokens=True).ids
        return tuple(full[: len(full) - len(plain)]) if full[len(full) - len(plain):] == plain else ()
