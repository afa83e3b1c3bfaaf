"""llama.cpp backend through llama-cpp-python (a GGUF file carries its own tokenizer)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from edgedistill.runtime.base import Model
from edgedistill.runtime.chat import ChatTemplate
from edgedistill.runtime.gguf_metadata import check_gguf

F32_CACHE = 0  # ggml type id of f32: an f16 KV cache alone limits f32 parity to ~1e-2


class LlamaCppModel(Model):
    """Decoding over a GGUF file with llama.cpp's KV cache and our sampling.

    Uses two internals of llama-cpp-python 0.3.36 (pinned): ``_ctx.get_logits_ith`` for
    the last row after a decode, and ``_batch``/``_ctx.decode`` to request logits for
    every position in :meth:`logits`.
    """

    format = "gguf"

    def __init__(self, path: Path, threads: int | None = None, n_ctx: int = 4096, f32_cache: bool = True):
        """``n_ctx``: KV-cache length in tokens (prompt + generation), capped at the model's
        trained context; ``f32_cache``: exact parity with torch (~1e-5) at twice the cache
        memory of llama.cpp's f16 default."""
        import llama_cpp
        from llama_cpp import Llama

        metadata = check_gguf(path)  # llama.cpp is only handed a header whose every length fits the file
        arch = metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise ValueError(f"{path} has no general.architecture string; it is not a model GGUF")
        trained = metadata.get(f"{arch}.context_length")
        n_ctx = min(n_ctx, trained) if isinstance(trained, int) and trained > 0 else n_ctx
        cache_type = {"type_k": F32_CACHE, "type_v": F32_CACHE} if f32_cache else {}
        try:
            self.llm = Llama(
                model_path=str(path), n_ctx=n_ctx, n_threads=threads or os.cpu_count(), logits_all=False,
                verbose=False, **cache_type,
            )
        except ValueError:  # llama-cpp-python's "Failed to load model from file": the reason went to its log
            raise ValueError(f"llama.cpp cannot load {path} (unsupported architecture or damaged tensors); "
                             "re-export it or run it with llama.cpp's own tools to see why") from None
        self.n_vocab = self.vocab_size = self.llm.n_vocab()
        self.eos_token_id = self.llm.token_eos()
        end_of_turn = llama_cpp.llama_vocab_eot(self.llm._model.vocab)  # -1 when the vocabulary has none
        self.end_token_ids = frozenset(t for t in (self.eos_token_id, end_of_turn) if t >= 0)
        self.context_length = self.llm.n_ctx()
        self.bos_token, self.eos_token = self._token_text(self.llm.token_bos()), self._token_text(self.eos_token_id)
        if self.llm.metadata.get("tokenizer.ggml.add_bos_token") == "true" and self.llm.token_bos() >= 0:
            self.bos_prefix = (self.llm.token_bos(),)
        template = self.llm.metadata.get("tokenizer.chat_template")
        if template:
            self.chat_template = ChatTemplate(template, self.bos_token, self.eos_token)

    def _token_text(self, token: int) -> str:
        return self.llm._model.token_get_text(token) if token >= 0 else ""

    def encode(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.llm.detokenize(list(token_ids)).decode("utf-8", errors="replace")

    def reset(self) -> None:
        self.llm.reset()

    def _append(self, token_ids: Sequence[int]) -> np.ndarray:
        self.llm.eval(list(token_ids))
        row = self.llm._ctx.get_logits_ith(-1)
        return np.ctypeslib.as_array(row, shape=(self.n_vocab,)).copy()

    def _all_logits(self, token_ids: Sequence[int]) -> np.ndarray:
        self.reset()
        self.llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        rows = []
        for start in range(0, len(token_ids), self.llm.n_batch):
            chunk = list(token_ids[start: start + self.llm.n_batch])
            self.llm._batch.set_batch(batch=chunk, n_past=start, logits_all=True)
            self.llm._ctx.decode(self.llm._batch)
            rows.append(np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(len(chunk), self.n_vocab)).copy())
        self.reset()
        return np.concatenate(rows).astype(np.float32)  # (T, V)
