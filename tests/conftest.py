"""Shared fixtures: seeded RNGs and tiny real HF models built from configs."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    # Triton kernels run on CPU tensors in its interpreter; the flag is read when a kernel
    # module is imported, so it is set before any test imports one.
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """Random Llama, GQA (4 query / 2 KV heads), tied embeddings, BPE tokenizer."""
    from edgedistill.demo.tiny import build_tiny_teacher

    return build_tiny_teacher("tiny-llama", tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture(scope="session")
def tiny_mistral_dir(tmp_path_factory) -> Path:
    """Random Mistral (the Llama layout under model_type mistral), untied lm_head."""
    from edgedistill.demo.tiny import build_tiny_teacher

    return build_tiny_teacher("tiny-mistral", tmp_path_factory.mktemp("tiny-mistral") / "model")


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory) -> Path:
    """Random Qwen2, GQA, q/k/v biases (random, non-zero), untied lm_head."""
    from edgedistill.demo.tiny import build_tiny_teacher

    return build_tiny_teacher("tiny-qwen2", tmp_path_factory.mktemp("tiny-qwen2") / "model")


@pytest.fixture(scope="session")
def chatml_llama_dir(tiny_llama_dir, tmp_path_factory) -> Path:
    """The tiny Llama whose tokenizer carries the ChatML template."""
    import shutil

    from edgedistill.hf import load_tokenizer
    from edgedistill.runtime.chat import CHATML_TEMPLATE

    model_dir = tmp_path_factory.mktemp("chatml-llama") / "model"
    shutil.copytree(tiny_llama_dir, model_dir)
    tokenizer = load_tokenizer(model_dir)
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="session")
def long_context_onnx(tiny_llama_dir, tmp_path_factory) -> Path:
    """The tiny Llama with an 8192-token context, as fp32 ONNX: a 6,000-token generation
    takes seconds, long enough to queue behind, disconnect from or shut down during."""
    import json
    import shutil

    from edgedistill.exporters.onnx import export_onnx

    root = tmp_path_factory.mktemp("long-context")
    shutil.copytree(tiny_llama_dir, root / "model")
    config = json.loads((root / "model" / "config.json").read_text())
    config["max_position_embeddings"] = 8192
    (root / "model" / "config.json").write_text(json.dumps(config))
    export_onnx(root / "model", root / "onnx", "fp32")
    return root / "onnx"
