"""PyTorch backend: a Hugging Face model folder (the teacher) through transformers, on CPU.

It exists so the benchmark can serve the teacher over the same HTTP API as its students.
Everything but the forward pass is read as the ONNX backend reads it: the tokenizer
(``tokenizer.json`` through ``tokenizers``, not transformers' tokenizer classes), the ids
that end generation and the chat template (``folder_meta``). Teacher and students thus
tokenize, stop and render chats identically. torch and transformers are imported when a
model is loaded, never when ``edgedistill.runtime`` is imported.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Sequence

import numpy as np

from edgedistill.runtime.base import Model
from edgedistill.json_files import read_json_object
from edgedistill.runtime.folder_meta import TokenizerJsonText, read_folder_metadata


class TorchModel(TokenizerJsonText, Model):
    """fp32 ``AutoModelForCausalLM`` with its KV cache kept between ``_append`` calls."""

    format = "hf"

    def __init__(self, path: Path, threads: int | None = None):
        try:
            import torch
            from transformers import AutoModelForCausalLM
        except ImportError:
            raise ValueError("the hf backend needs torch and transformers (pip install 'edgedistill[build]')") from None
        from tokenizers import Tokenizer

        path = Path(path)
        tokenizer_file = path / "tokenizer.json"
        if not tokenizer_file.is_file():  # checked before the weights load: fail in a second, not after minutes
            raise ValueError(f"{tokenizer_file} is missing; save the fast tokenizer beside the weights: "
                             f"AutoTokenizer.from_pretrained(...).save_pretrained('{path}')")
        config = read_json_object(path / "config.json")
        metadata = read_folder_metadata(path, config)
        self.eos_token_id, self.end_token_ids = metadata.eos_token_id, frozenset(metadata.end_token_ids)
        self.bos_token, self.eos_token, self.chat_template = metadata.bos_token, metadata.eos_token, metadata.chat_template
        self.context_length = config["max_position_embeddings"]
        self.vocab_size = config["vocab_size"]
        if threads:
            torch.set_num_threads(threads)  # process-wide in torch: a server's instances all share the last value
        # `dtype`, not `torch_dtype`: transformers 4.57 deprecated the old name (it warns)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=True).eval()
        # logits_to_keep=1 spares the (T, V) lm_head product over a prompt when only its last row is sampled
        self.can_keep_last_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.bos_prefix = self.special_prefix()
        self.reset()

    def reset(self) -> None:
        # None, not an empty DynamicCache: on the first call the model builds the cache its
        # architecture needs (e.g. sliding-window layers from its config) and returns it.
        self.cache = None

    def _run(self, token_ids: Sequence[int], last_only: bool) -> np.ndarray:
        """Feed ``token_ids`` after the cached ones; (T, V) logits, (1, V) when ``last_only``."""
        import torch

        input_ids = torch.tensor([list(token_ids)], dtype=torch.long)  # (1, T)
        options = {"logits_to_keep": 1} if last_only and self.can_keep_last_logits else {}
        with torch.inference_mode():
            outputs = self.model(input_ids=input_ids, past_key_values=self.cache, use_cache=True, **options)
        self.cache = outputs.past_key_values  # a DynamicCache, grown in place by later calls
        return outputs.logits[0].float().numpy()  # (T, V)

    def _append(self, token_ids: Sequence[int]) -> np.ndarray:
        return self._run(token_ids, last_only=True)[-1]

    def _all_logits(self, token_ids: Sequence[int]) -> np.ndarray:
        self.reset()
        return self._run(token_ids, last_only=False)
