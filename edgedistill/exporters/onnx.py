"""ONNX export with KV cache through optimum-onnx (task ``text-generation-with-past``).

The folder holds ``model.onnx`` (+ external data when large), the HF config, generation
config and tokenizer files, so it loads in optimum's ORTModelForCausalLM and in
``edgedistill.runtime``. ``head_dim`` is written into config.json explicitly: after head
pruning it differs from hidden_size // num_attention_heads, and loaders must not guess.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

from edgedistill.errors import UserError
from edgedistill.exporters.formats import ONNX_QUANTIZATIONS

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


def export_onnx(model_dir: Path, out_dir: Path, quantization: str) -> dict:
    """Export ``model_dir`` into ``out_dir``; returns facts for the manifest."""
    if quantization not in ONNX_QUANTIZATIONS:
        raise UserError(f"unknown ONNX quantization '{quantization}'; supported: {', '.join(ONNX_QUANTIZATIONS)}")
    from optimum.exporters.onnx import main_export

    for name in ("optimum", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches
        main_export(
            model_name_or_path=str(model_dir),
            output=out_dir,
            task="text-generation-with-past",
            device="cpu",
            do_validation=False,  # our parity gate checks every artifact against the torch student
            local_files_only=True,
        )
    for name in _TOKENIZER_FILES:
        if (model_dir / name).is_file() and not (out_dir / name).is_file():
            shutil.copy2(model_dir / name, out_dir / name)
    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.setdefault("head_dim", config["hidden_size"] // config["num_attention_heads"])
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return {"opset": _opset(out_dir / "model.onnx")}


def _opset(model_path: Path) -> int:
    import onnx

    model = onnx.load(model_path, load_external_data=False)
    return max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx"))
