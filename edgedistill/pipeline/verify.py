"""Verify stage: run the parity gate on every exported artifact (see exporters/verify.py)."""

from __future__ import annotations

from pathlib import Path

from edgedistill.artifacts import Artifact, atomic_write_json, record_files
from edgedistill.stage_context import StageContext

OUTPUTS = ("verify",)


def verify_exports(export: Artifact, verify_cfg) -> dict[str, dict]:
    """Artifact name -> parity result, against the model each artifact came from (the student,
    or the teacher for its own exports)."""
    from edgedistill.exporters.verify import check_artifact
    from edgedistill.hf import load_model, load_tokenizer

    sources = {"student": export.find("distill").model_dir}
    if any(entry.get("source") == "teacher" for entry in export.payload["exports"]):
        sources["teacher"] = export.find("teacher").model_dir
    results = {}
    for source, model_dir in sources.items():  # each artifact against the torch model it was exported from
        model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
        for entry in export.payload["exports"]:
            if entry.get("source", "student") == source:
                results[entry["name"]] = check_artifact(model, tokenizer, export.root / entry["path"], entry["format"],
                                                        entry["quantization"], verify_cfg)
        del model
    return {entry["name"]: results[entry["name"]] for entry in export.payload["exports"]}


def run(cfg: dict, inp: Artifact, ctx: StageContext) -> Artifact:
    """cfg: {"verify": VerifyConfig}. Failing artifacts are recorded, not raised."""
    out_dir = ctx.out_dir
    results = verify_exports(inp, cfg["verify"])
    (out_dir / "verify").mkdir(parents=True)
    atomic_write_json(out_dir / "verify" / "parity.json", results)
    metrics = {
        "artifacts_device_ready": sum(r["device_ready"] for r in results.values()),
        "artifacts_failed_parity": sum(not r["device_ready"] for r in results.values()),
    }
    return Artifact("verify", out_dir, record_files(out_dir, ["verify"]), {"results": results}, metrics, inp)
