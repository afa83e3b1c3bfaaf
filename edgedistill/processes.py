"""Multi-process launches (``accelerate launch`` / torchrun): which process does what.

A build started under a launcher runs in every process. The main process owns the build
folder and runs every stage; the distill stage runs in all processes (each trains on its
slice of every global batch, see ``pipeline/distill/trainer.py``); the other processes
wait at a barrier after each stage and then read the main process's manifest record.
Outside a launcher (``WORLD_SIZE`` unset or 1) this is one process and every barrier is
a no-op, and nothing distributed is imported.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Processes:
    index: int = 0
    count: int = 1

    @property
    def main(self) -> bool:
        return self.index == 0

    def barrier(self) -> None:
        if self.count > 1:
            from accelerate import PartialState

            PartialState().wait_for_everyone()


def current() -> Processes:
    """This process's place in the launch; on a machine without CUDA the processes talk
    over gloo (Accelerate's multi-CPU mode)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return Processes(state.process_index, state.num_processes)


@contextmanager
def main_process_first(procs: Processes | None = None):
    """The main process runs the block first (it writes a shared file: a teacher cache,
    responses, scores), the others wait at a barrier and then run it (reading that file)."""
    procs = procs or current()
    if not procs.main:
        procs.barrier()
    yield
    if procs.main:
        procs.barrier()
