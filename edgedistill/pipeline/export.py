"""Export stage: the distilled student as ONNX folders and GGUF files.

Layout under the build folder: ``onnx/<quantization>/`` and
``gguf/student-<quantization>.gguf``. The quantization of each artifact is recorded in
the payload (and from there the manifest), never inferred from these names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from edgedistill.artifacts import Artifact, record_files

OUTPUTS = ("onnx", "gguf")


def _export_onnx(student_dir: Path, root: Path, quantization: str, export_cfg) -> tuple[str, dict]:
    from edgedistill.exporters.onnx import export_onnx

    rel = f"onnx/{quantization}"
    fp32 = root / "onnx" / "fp32"  # already exported in this stage when the recipe lists fp32 first
    return rel, export_onnx(student_dir, root / rel, quantization, export_cfg.onnx_block_size,
                            fp32_source=fp32 if (fp32 / "model.onnx").is_file() else None)


def _export_gguf(student_dir: Path, root: Path, quantization: str, export_cfg) -> tuple[str, dict]:
    from edgedistill.exporters.gguf import export_gguf

    rel = f"gguf/student-{quantization}.gguf"
    return rel, export_gguf(student_dir, root / rel, quantization)


# format -> exporter(student_dir, build_root, quantization, ExportConfig) -> (relative path, facts)
EXPORTERS: dict[str, Callable[[Path, Path, str, object], tuple[str, dict]]] = {"onnx": _export_onnx, "gguf": _export_gguf}


def run(cfg: dict, inp: Artifact, out_dir: Path) -> Artifact:
    """cfg: {"export": ExportConfig}."""
    exports = []
    for fmt, exporter in EXPORTERS.items():
        for quantization in getattr(cfg["export"], fmt):
            rel, facts = exporter(inp.model_dir, out_dir, quantization, cfg["export"])
            exports.append({"name": f"{fmt}-{quantization}", "format": fmt, "quantization": quantization, "path": rel, "facts": facts})
    present = [name for name in OUTPUTS if (out_dir / name).exists()]
    return Artifact("export", out_dir, record_files(out_dir, present), {"exports": exports}, {}, inp)
