"""Loading Hugging Face models and tokenizers from local folders (torch side only)."""

from __future__ import annotations

from pathlib import Path

from edgedistill.architectures import ARCHITECTURES, architecture, head_dim_of  # noqa: F401 (head_dim_of re-exported)
from edgedistill.errors import UserError
from edgedistill.json_files import read_json_object

SUPPORTED_ARCHITECTURES = tuple(ARCHITECTURES)


def read_config(model_dir: Path) -> dict:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise UserError(f"{model_dir} is not a Hugging Face model folder (no config.json); pass a folder written by save_pretrained")
    try:
        return read_json_object(path, "fix or regenerate it with save_pretrained")
    except ValueError as exc:
        raise UserError(str(exc)) from None


def check_architecture(model_dir: Path) -> str:
    model_type = read_config(model_dir).get("model_type", "")
    try:
        architecture(model_type)
    except UserError as exc:
        raise UserError(f"{exc} (in {model_dir})") from None
    return model_type


def rms_norms(model) -> list:
    """Every RMSNorm over the hidden size (per layer and final); per-head q/k norms
    (Qwen3, Gemma 3) run over head_dim and are not hidden channels."""
    hidden = model.config.hidden_size
    return [m for name, m in model.named_modules()
            if name.endswith("norm") and ".self_attn." not in name and getattr(m, "weight", None) is not None
            and tuple(m.weight.shape) == (hidden,)]


def save_model_folder(model, tokenizer, model_dir: Path) -> None:
    """An HF folder: safetensors weights, config, tokenizer and generation config."""
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(model_dir)


def load_model(model_dir: Path):
    """The model in fp32, eval mode, without KV cache defaults changed."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    return tokenizer


def count_parameters_on_disk(model_dir: Path) -> int | None:
    """Parameters stored in the folder's safetensors, read from headers (no weights loaded).

    A tied lm_head is not stored by save_pretrained, so it counts once, as in
    :func:`count_parameters`. None when the folder has no safetensors files.
    """
    from math import prod

    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(file, framework="np") as handle:
            total += sum(prod(handle.get_slice(name).get_shape()) for name in handle.keys())
    return total


def count_parameters(model) -> int:
    """Unique parameters (a tied embedding / lm_head counts once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
