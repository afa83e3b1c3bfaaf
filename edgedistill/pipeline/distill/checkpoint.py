"""Training checkpoints: atomic, checksummed, loadable without unpickling code.

A checkpoint is a folder ``step-0000042/`` inside the run's state folder:

* ``student.safetensors``: the student's weights (tied tensors stored once);
* ``extra.safetensors``: weights trained beside the student (feature-KD projections);
* ``trainer_state.pt``: optimizer, LR scheduler, torch RNG state, the step and the log
  rows so far: tensors, numbers, strings and lists only, read with ``weights_only=True``;
* ``checkpoint.json``: step and sha256 + bytes of the files above, written last.

It is written into ``.tmp-step-*`` and renamed into place, so a kill leaves either a
complete checkpoint or a temporary folder that the next run removes. A checkpoint whose
files do not match their recorded hashes is skipped (the previous one is used).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from edgedistill.artifacts import sha256_file

META_NAME = "checkpoint.json"
FILES = ("student.safetensors", "extra.safetensors", "trainer_state.pt")


def save_checkpoint(state_dir: Path, step: int, student, extra: torch.nn.Module | None, optimizer, scheduler,
                    log: list[dict], keep: int = 2) -> Path:
    """Write the state after ``step`` optimizer steps; keeps the newest ``keep`` checkpoints."""
    from safetensors.torch import save_file, save_model

    state_dir.mkdir(parents=True, exist_ok=True)
    final = state_dir / f"step-{step:07d}"
    temp = state_dir / f".tmp-step-{step:07d}"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    save_model(student, str(temp / FILES[0]))
    save_file({k: v.detach().contiguous() for k, v in (extra.state_dict() if extra is not None else {}).items()},
              str(temp / FILES[1]))
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(), "log": log}, temp / FILES[2])
    meta = {"step": step, "files": {name: {"sha256": sha256_file(temp / name), "bytes": (temp / name).stat().st_size}
                                    for name in FILES}}
    (temp / META_NAME).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    temp.rename(final)
    for old in sorted(state_dir.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def is_intact(folder: Path) -> bool:
    """All files present with their recorded sha256."""
    try:
        meta = json.loads((folder / META_NAME).read_text(encoding="utf-8"))
        return all(sha256_file(folder / name) == entry["sha256"] for name, entry in meta["files"].items())
    except (OSError, ValueError, KeyError):
        return False


def latest_checkpoint(state_dir: Path | None) -> Path | None:
    """The newest intact checkpoint in ``state_dir`` (leftover temporary folders are removed)."""
    if state_dir is None or not state_dir.is_dir():
        return None
    for leftover in state_dir.glob(".tmp-step-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for folder in sorted(state_dir.glob("step-*"), reverse=True):
        if is_intact(folder):
            return folder
    return None


def load_checkpoint(folder: Path, student, extra: torch.nn.Module | None, optimizer, scheduler) -> tuple[int, list[dict]]:
    """Restore everything :func:`save_checkpoint` wrote; returns (step, log rows)."""
    from safetensors.torch import load_file, load_model

    load_model(student, str(folder / FILES[0]), device=str(next(student.parameters()).device))
    if extra is not None:
        extra.load_state_dict(load_file(str(folder / FILES[1]), device=str(next(student.parameters()).device)))
    state = torch.load(folder / FILES[2], map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), list(state["log"])
