"""Student stage (``student:`` other than ``prune``): an independent student model, of
another family or tokenizer, materialized as the teacher is (``teacher.materialize``):
a tiny builtin is built here, a folder used in place, a GGUF file or a real builtin
dequantized once into a cached folder. The prune stage is skipped; distill trains this
model from the teacher upstream.
"""

from __future__ import annotations

from pathlib import Path

from edgedistill.artifacts import Artifact
from edgedistill.stage_context import StageContext

OUTPUTS = ("student-init",)


def run(cfg: dict, inp: Artifact, ctx: StageContext) -> Artifact:
    """cfg: {"student": spec, "seed": int, "source": teacher.resolve_source(spec)}."""
    out_dir = ctx.out_dir
    from edgedistill.hf import count_parameters, count_parameters_on_disk, load_model
    from edgedistill.pipeline.teacher import materialize

    model_dir, root, rel, files = materialize(cfg["source"], out_dir, cfg["seed"], OUTPUTS[0])
    params = count_parameters_on_disk(model_dir) or count_parameters(load_model(model_dir))
    return Artifact("student", root, files, payload={"model_dir": rel}, metrics={"student_init_params": params}, parent=inp)
