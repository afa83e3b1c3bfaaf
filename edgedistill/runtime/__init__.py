"""Run an exported student without PyTorch: ``load(path).generate(prompt)``.

Importing this package imports neither torch nor transformers; each backend imports its
own runtime (onnxruntime, llama-cpp-python) only when a model of its format is loaded.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from edgedistill.runtime.base import Completion, Model, StreamChunk, Timings
from edgedistill.runtime.chat import CHAT_TEMPLATES, ChatTemplate

# format -> "module:class"; a backend registers by adding a row.
BACKENDS: dict[str, str] = {
    "onnx": "edgedistill.runtime.onnx_backend:OnnxModel",
    "gguf": "edgedistill.runtime.llamacpp_backend:LlamaCppModel",
}
GGUF_MAGIC = b"GGUF"


def detect_format(path: str | Path) -> str:
    """Format of an artifact from its contents: GGUF magic bytes, or an ONNX model folder."""
    path = Path(path)
    if path.is_file():
        with open(path, "rb") as handle:
            if handle.read(4) == GGUF_MAGIC:
                return "gguf"
        raise ValueError(f"{path} is not a GGUF file (no GGUF magic) and not an ONNX model folder")
    if path.is_dir() and (path / "model.onnx").is_file() and (path / "config.json").is_file():
        return "onnx"
    if path.is_dir():
        raise ValueError(f"{path} is not an ONNX model folder (needs model.onnx and config.json)")
    raise FileNotFoundError(f"{path} does not exist")


def load(path: str | Path, backend: str | None = None, threads: int | None = None,
         chat_template: str | None = None, **options) -> Model:
    """Load a GGUF file or ONNX folder; ``backend`` overrides detection.

    ``threads``: CPU threads of the backend (default: all cores). ``chat_template``
    replaces the artifact's own: Jinja text or a builtin name (``chatml``). ``options``
    go to the backend (llama.cpp: ``n_ctx``, ``f32_cache``).
    """
    name = backend or detect_format(path)
    if name not in BACKENDS:
        raise ValueError(f"unknown backend '{name}'; available: {', '.join(BACKENDS)}")
    module_name, class_name = BACKENDS[name].split(":")
    model_class = getattr(importlib.import_module(module_name), class_name)
    model = model_class(Path(path), threads=threads, **options)
    if chat_template:
        model.chat_template = ChatTemplate(CHAT_TEMPLATES.get(chat_template, chat_template), model.bos_token, model.eos_token)
    return model


__all__ = ["BACKENDS", "ChatTemplate", "Completion", "Model", "StreamChunk", "Timings", "detect_format", "load"]
