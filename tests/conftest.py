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
