"""Run by test_trainer's DDP test under `accelerate launch --cpu --num_processes 2` (and
in-process for the single-process reference): a few trainer steps on fixed data; the
main process saves the trained weights and the log."""

import json
import sys
from pathlib import Path

import torch


def train_and_save(model_dir: str, out: str) -> None:
    from accelerate import Accelerator
    from safetensors.torch import save_model

    from edgedistill.config import DistillConfig
    from edgedistill.hf import load_model
    from edgedistill.data import Packed
    from edgedistill.pipeline.distill.trainer import Trainer

    accelerator = Accelerator()
    generator = torch.Generator().manual_seed(0)
    teacher = load_model(model_dir)
    with torch.no_grad():
        for parameter in teacher.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    ids = torch.randint(0, 200, (24, 16), generator=generator)
    targets = torch.ones_like(ids, dtype=torch.bool)
    for row in range(len(ids)):
        targets[row, : row % 7] = False  # uneven target counts per rank
    data = Packed(ids, targets)
    student = load_model(model_dir)
    cfg = DistillConfig(steps=3, batch_size=8, grad_accumulation=2, learning_rate=1e-3, alpha=0.5, grad_clip=1.0)
    log = Trainer(student, data, data[:2], cfg, seed=0, teacher=teacher, accelerator=accelerator).fit().log
    if accelerator.is_main_process:
        save_model(student, str(Path(out) / "student.safetensors"))
        (Path(out) / "log.json").write_text(json.dumps({"log": log, "processes": accelerator.num_processes}))


if __name__ == "__main__":
    train_and_save(sys.argv[1], sys.argv[2])
