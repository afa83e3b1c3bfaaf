"""ONNX Runtime backend: an optimum-layout decoder with explicit KV-cache inputs/outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from edgedistill.runtime.base import Model
from edgedistill.json_files import read_json_object
from edgedistill.runtime.folder_meta import TokenizerJsonText, read_folder_metadata

_ORT_TO_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class OnnxModel(TokenizerJsonText, Model):
    """Greedy/sampled decoding over ``model.onnx`` with the cache kept between steps.

    Cache shapes come from config.json's ``head_dim`` and ``num_key_value_heads`` (never
    ``hidden_size // num_attention_heads``, which is wrong after head pruning).
    """

    format = "onnx"

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        path = Path(path)
        config = read_json_object(path / "config.json")
        self.num_layers = config["num_hidden_layers"]
        self.kv_heads = config.get("num_key_value_heads") or config["num_attention_heads"]
        self.head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        metadata = read_folder_metadata(path, config)
        self.eos_token_id, self.end_token_ids = metadata.eos_token_id, frozenset(metadata.end_token_ids)
        self.bos_token, self.eos_token, self.chat_template = metadata.bos_token, metadata.eos_token, metadata.chat_template
        self.context_length = config["max_position_embeddings"]
        self.vocab_size = config["vocab_size"]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path / "model.onnx"), options, providers=["CPUExecutionProvider"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.input_names = set(inputs)
        self.cache_dtype = _ORT_TO_NUMPY[inputs["past_key_values.0.key"].type]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.bos_prefix = self.special_prefix()
        self.reset()

    def reset(self) -> None:
        empty = np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=self.cache_dtype)  # (B, KV, T, D)
        self.cache = {f"past_key_values.{i}.{kind}": empty for i in range(self.num_layers) for kind in ("key", "value")}
        self.cached_tokens = 0

    def _run(self, token_ids: Sequence[int]) -> np.ndarray:
        count = len(token_ids)
        feed = {
            "input_ids": np.asarray([token_ids], dtype=np.int64),  # (1, T)
            "attention_mask": np.ones((1, self.cached_tokens + count), dtype=np.int64),
            **self.cache,
        }
        if "position_ids" in self.input_names:
            feed["position_ids"] = np.arange(self.cached_tokens, self.cached_tokens + count, dtype=np.int64)[None]
        outputs = dict(zip(self.output_names, self.session.run(self.output_names, feed)))
        for name in self.cache:
            self.cache[name] = outputs[name.replace("past_key_values", "present")]
        self.cached_tokens += count
        return outputs["logits"][0]  # (T, V)

    def _append(self, token_ids: Sequence[int]) -> np.ndarray:
        return self._run(token_ids)[-1]

    def _all_logits(self, token_ids: Sequence[int]) -> np.ndarray:
        self.reset()
        return self._run(token_ids).astype(np.float32)
