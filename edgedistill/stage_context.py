"""The one argument every stage's ``run(cfg, inp, ctx)`` gets besides its config and input.

A stage writes its outputs into ``ctx.out_dir`` (a temporary folder the orchestrator moves
into place), may keep resumable state in ``ctx.state_dir``, and may write into
``ctx.build_dir`` only the shared folders its module declares in ``SHARED_FOLDERS`` (caches
that outlive a stage key, e.g. the teacher's responses): the orchestrator checks after the
stage that nothing else appeared in the build folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgedistill.processes import Processes


@dataclass(frozen=True)
class StageContext:
    out_dir: Path  # the stage's outputs (named in its OUTPUTS) go here
    build_dir: Path  # the build folder: only the declared shared folders may be written in it
    state_dir: Path  # survives a kill between runs of the same stage key (checkpoints)
    shared_folders: tuple[str, ...] = ()  # the stage module's SHARED_FOLDERS
    processes: Processes = field(default_factory=Processes)
    extras: dict = field(default_factory=dict)  # settings outside the stage key (checkpoint cadence)

    @classmethod
    def scratch(cls, out_dir: Path, shared_folders: tuple[str, ...] = ()) -> "StageContext":
        """A context for running one stage on its own (tests, scripts): everything under ``out_dir``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        return cls(out_dir, out_dir, out_dir / ".state", shared_folders)
