"""Export stage: the distilled student as ONNX folders and GGUF files.

Layout under the build folder: ``onnx/<quantization>/`` and
``gguf/student-<quantization>.gguf``; the teacher's own exports (``export.teacher_onnx``,
``export.teacher_gguf``: the "only quantize the teacher" alternative) are
``onnx/teacher-<quantization>/`` and ``gguf/teacher-<quantization>.gguf``. The quantization of each artifact is recorded in
the payload (and from there the manifest), never inferred from these names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from edgedistill.artifacts import Artifact, record_files
from edgedistill.stage_context import StageContext

OUTPUTS = ("onnx", "gguf")


def _export_onnx(student_dir: Path, root: Path, quantization: str, export_cfg, calibration,
                 prefix: str = "") -> tuple[str, dict]:
    from edgedistill.exporters.onnx import export_onnx

    rel = f"onnx/{prefix}{quantization}"
    fp32 = root / "onnx" / f"{prefix}fp32"  # already exported in this stage when the recipe lists fp32 first
    return rel, export_onnx(student_dir, root / rel, quantization, export_cfg.onnx_block_size,
                            fp32_source=fp32 if (fp32 / "model.onnx").is_file() else None)


def _export_gguf(student_dir: Path, root: Path, quantization: str, export_cfg, calibration,
                 prefix: str = "") -> tuple[str, dict]:
    from edgedistill.exporters.formats import GGUF_QUANTIZATIONS
    from edgedistill.exporters.gguf import export_gguf

    rel = f"gguf/{prefix or 'student-'}{quantization}.gguf"
    if not GGUF_QUANTIZATIONS[quantization].importance:
        return rel, export_gguf(student_dir, root / rel, quantization)
    importance, tokens = calibration.measured()
    facts = export_gguf(student_dir, root / rel, quantization, importance)
    return rel, {**facts, "importance_matrix": {"text": calibration.spec, "tokens": tokens}}


class Calibration:
    """The importance matrix of the student on the calibration text, measured on first use
    and shared by every GGUF type of the stage."""

    def __init__(self, student_dir: Path, spec: str):
        self.student_dir, self.spec, self._measured = student_dir, spec, None

    def measured(self) -> tuple[dict, int]:
        if self._measured is None:
            from edgedistill.exporters.importance_matrix import measure

            self._measured = measure(self.student_dir, self.spec)
        return self._measured


# format -> exporter(student_dir, build_root, quantization, ExportConfig, Calibration) -> (relative path, facts)
EXPORTERS: dict[str, Callable[[Path, Path, str, object, Calibration], tuple[str, dict]]] = {
    "onnx": _export_onnx, "gguf": _export_gguf}


def run(cfg: dict, inp: Artifact, ctx: StageContext) -> Artifact:
    """cfg: {"export": ExportConfig, "calibration": data spec of the importance-matrix text}."""
    out_dir = ctx.out_dir
    exports = []
    spec = cfg.get("calibration") or "builtin:tiny-corpus"
    calibration = Calibration(inp.model_dir, spec)
    for fmt, exporter in EXPORTERS.items():
        for quantization in getattr(cfg["export"], fmt):
            rel, facts = exporter(inp.model_dir, out_dir, quantization, cfg["export"], calibration)
            exports.append({"name": f"{fmt}-{quantization}", "format": fmt, "quantization": quantization, "path": rel,
                            "facts": facts, "source": "student"})
    # the "only quantize the teacher" alternative: the teacher through the same exporters (and, next, the same gate)
    teacher_formats = [(fmt, q) for fmt in EXPORTERS for q in getattr(cfg["export"], f"teacher_{fmt}")]
    if teacher_formats:  # an API-only teacher has no weights to export (preflight refuses asking for that)
        teacher_dir = inp.find("teacher").model_dir
        teacher_calibration = Calibration(teacher_dir, spec)
    for fmt, quantization in teacher_formats:
        rel, facts = EXPORTERS[fmt](teacher_dir, out_dir, quantization, cfg["export"], teacher_calibration,
                                    prefix="teacher-")
        exports.append({"name": f"teacher-{fmt}-{quantization}", "format": fmt, "quantization": quantization,
                        "path": rel, "facts": facts, "source": "teacher"})
    present = [name for name in OUTPUTS if (out_dir / name).exists()]
    return Artifact("export", out_dir, record_files(out_dir, present), {"exports": exports}, {}, inp)
