"""Run an exported student without PyTorch (and its HF teacher with it): ``load(path).generate(prompt)``.

Formats: a GGUF file (llama.cpp), an ONNX model folder (ONNX Runtime), and a Hugging Face
model folder (torch + transformers: the teacher, served so the benchmark measures it over
the same API as its students). Importing this package imports neither torch nor
transformers; each backend imports its own runtime (onnxruntime, llama-cpp-python,
torch) only when a model of its format is loaded.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from edgedistill.runtime.base import Completion, Model, StreamChunk, Timings, TokenLogprob
from edgedistill.runtime.chat import CHAT_TEMPLATES, ChatTemplate

# format -> "module:class"; a backend registers by adding a row.
BACKENDS: dict[str, str] = {
    "onnx": "edgedistill.runtime.onnx_backend:OnnxModel",
    "gguf": "edgedistill.runtime.llamacpp_backend:LlamaCppModel",
    "hf": "edgedistill.runtime.torch_backend:TorchModel",
}
GGUF_MAGIC = b"GGUF"
# folder format -> files of which one must sit beside config.json. Checked in order, so a
# folder holding both an ONNX graph and HF weights runs on ONNX Runtime, without torch.
FOLDER_FORMATS: dict[str, tuple[str, ...]] = {
    "onnx": ("model.onnx",),
    "hf": ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"),
}


def detect_format(path: str | Path) -> str:
    """Format of an artifact from its contents: GGUF magic bytes, or a folder with
    config.json and an ONNX graph ("onnx") or HF weights ("hf"; see FOLDER_FORMATS)."""
    path = Path(path)
    if path.is_file():
        with open(path, "rb") as handle:
            if handle.read(4) == GGUF_MAGIC:
                return "gguf"
        raise ValueError(f"{path} is not a GGUF file (no GGUF magic) and not a model folder")
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist")
    if (path / "config.json").is_file():
        for name, files in FOLDER_FORMATS.items():
            if any((path / file).is_file() for file in files):
                return name
    raise ValueError(f"{path} is not an ONNX model folder (config.json + model.onnx) and not an HF model folder "
                     f"(config.json + one of {', '.join(FOLDER_FORMATS['hf'])}; runs with torch and transformers)")


def load(path: str | Path, backend: str | None = None, threads: int | None = None,
         chat_template: str | None = None, **options) -> Model:
    """Load a GGUF file, ONNX folder or HF folder; ``backend`` overrides detection.

    ``threads``: CPU threads of the backend (default: all cores). ``chat_template``
    replaces the artifact's own: Jinja text or a builtin name (``chatml``). ``options``
    go to the backend (llama.cpp: ``n_ctx``, ``f32_cache``). The hf backend needs torch
    and transformers; without them it raises ValueError naming the extra to install.
    """
    name = backend or detect_format(path)
    if name not in BACKENDS:
        raise ValueError(f"unknown backend '{name}'; available: {', '.join(BACKENDS)}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    module_name, class_name = BACKENDS[name].split(":")
    model_class = getattr(importlib.import_module(module_name), class_name)
    try:
        model = model_class(Path(path), threads=threads, **options)
    except (FileNotFoundError, ImportError, MemoryError):
        raise
    except Exception as exc:
        raise _load_error(path, name, exc) from exc
    if chat_template:
        model.chat_template = ChatTemplate(CHAT_TEMPLATES.get(chat_template, chat_template), model.bos_token, model.eos_token)
    return model


def _load_error(path, backend: str, exc: Exception) -> ValueError:
    """One line naming the artifact: the backend's own ValueError when it names it, else
    the error of onnxruntime / tokenizers / a config missing keys (the artifact's fault,
    not a bug here: a fuzz test feeds damaged files through :func:`load`)."""
    text = str(exc).strip()
    reason = text.splitlines()[0][:300] if text else ""
    if isinstance(exc, ValueError) and str(path) in reason:
        return ValueError(reason)
    return ValueError(f"{path} cannot be loaded by the {backend} backend ({type(exc).__name__}: {reason}); it is "
                      "damaged or not an edgedistill export: export it again")


__all__ = ["BACKENDS", "ChatTemplate", "Completion", "Model", "StreamChunk", "Timings", "TokenLogprob", "detect_format", "load"]
