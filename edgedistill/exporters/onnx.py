"""ONNX export with KV cache through optimum-onnx (task ``text-generation-with-past``).

The folder holds ``model.onnx`` (+ external data when large), the HF config, generation
config and tokenizer files, so it loads in optimum's ORTModelForCausalLM and in
``edgedistill.runtime``. ``head_dim`` is written into config.json explicitly: after head
pruning it differs from hidden_size // num_attention_heads, and loaders must not guess.

Quantized variants start from the fp32 export and are rewritten by onnxruntime's own
quantizers (``ONNX_QUANTIZERS``): weight-only ``int8`` MatMulNBits (symmetric blocks of
``block_size`` input channels, an fp32 scale per block, fp32 activations: the default
int8, as it keeps quality on real activations), ``int4`` MatMulNBits with scales and zero
points fitted by HQQ (half-quadratic quantization, onnxruntime's calibrated data-free
algorithm), and ``int8_dynamic`` (MatMul weights per output channel, activations
quantized at run time; on SmolLM2 it costs mean KL 0.49, so it is never the default).
The embedding Gather stays fp32; so does a tied lm_head, whose weight is the embedding's.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

from edgedistill.errors import UserError
from edgedistill.exporters.formats import ONNX_QUANTIZATIONS

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                    "chat_template.jinja")


EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GB limit, with margin: larger models keep weights beside the graph


@contextmanager
def _root_logging_kept():
    """onnxruntime's quantizer modules call logging.basicConfig(level=INFO) on import and
    log through the root logger; keep the process's logging as it was (quiet)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    root.setLevel(logging.ERROR)
    for name in ("onnxruntime.quantization.matmul_nbits_quantizer", "onnxruntime.quantization", "onnxruntime"):
        logging.getLogger(name).setLevel(logging.ERROR)  # they set INFO/DEBUG on themselves
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _int8_dynamic(source: Path, target: Path, block_size: int) -> None:
    with _root_logging_kept():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(source, target, op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8,
                         use_external_data_format=_large(source))


def _nbits(bits: int, hqq: bool = False):
    def quantize(source: Path, target: Path, block_size: int) -> None:
        with _root_logging_kept():
            import onnx
            from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig, MatMulNBitsQuantizer

            algo = HQQWeightOnlyQuantConfig(block_size=block_size, bits=bits) if hqq else None
            quantizer = MatMulNBitsQuantizer(onnx.load(source), bits=bits, block_size=block_size, is_symmetric=not hqq,
                                             algo_config=algo)
            with warnings.catch_warnings():
                # HQQ wraps onnx's read-only numpy weights in torch tensors it only reads
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                quantizer.process()
            quantizer.model.save_model_to_file(str(target), use_external_data_format=_large(source))

    return quantize


# quantization name -> rewrite(fp32 model.onnx, quantized model.onnx, block_size); fp32 has none
ONNX_QUANTIZERS = {"int8": _nbits(8), "int4": _nbits(4, hqq=True), "int8_dynamic": _int8_dynamic}


def _large(model_path: Path) -> bool:
    return sum(f.stat().st_size for f in model_path.parent.iterdir() if f.is_file()) > EXTERNAL_DATA_BYTES


def export_onnx(model_dir: Path, out_dir: Path, quantization: str, block_size: int = 32,
                fp32_source: Path | None = None) -> dict:
    """Export ``model_dir`` into ``out_dir``; returns facts for the manifest.

    ``fp32_source``: an fp32 export of the same model already on disk (the build's
    ``onnx/fp32``), quantized instead of exporting the model again."""
    if quantization not in ONNX_QUANTIZATIONS:
        raise UserError(f"unknown ONNX quantization '{quantization}'; supported: {', '.join(ONNX_QUANTIZATIONS)}")
    if quantization == "fp32":
        return _export_fp32(model_dir, out_dir)
    fp32_dir = fp32_source if fp32_source is not None else out_dir.with_name(f".{out_dir.name}-fp32")
    try:
        if fp32_source is None:
            shutil.rmtree(fp32_dir, ignore_errors=True)
            _export_fp32(model_dir, fp32_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        ONNX_QUANTIZERS[quantization](fp32_dir / "model.onnx", out_dir / "model.onnx", block_size)
        for file in fp32_dir.iterdir():  # config, tokenizer and generation config beside the graph
            if file.is_file() and not file.name.startswith("model.onnx"):
                shutil.copy2(file, out_dir / file.name)
    finally:
        if fp32_source is None:
            shutil.rmtree(fp32_dir, ignore_errors=True)
    return {"opset": _opset(out_dir / "model.onnx"), "block_size": block_size if quantization in ("int8", "int4")
            else None, "quantized_ops": _op_counts(out_dir / "model.onnx")}


def _op_counts(model_path: Path) -> dict[str, int]:
    """How many nodes of each quantized op type the graph holds (what the quantizer did)."""
    import onnx

    graph = onnx.load(model_path, load_external_data=False).graph
    kinds = ("MatMulNBits", "DynamicQuantizeMatMul", "MatMulInteger", "DynamicQuantizeLinear", "MatMul")
    counts = {kind: sum(node.op_type == kind for node in graph.node) for kind in kinds}
    return {kind: count for kind, count in counts.items() if count}


def _export_fp32(model_dir: Path, out_dir: Path) -> dict:
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
