"""Admission control and the model-instance pool of the server.

Each model instance decodes one request at a time in a worker thread (a ``Model`` is not
thread-safe); requests beyond the free instances wait in a bounded queue, and beyond
that are refused (QueueFull, answered 429).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import AsyncIterator

import anyio

from edgedistill.runtime.base import Model, PreparedPrompt, StreamChunk


class QueueFull(Exception):
    pass


class Scheduler:
    """Admission and the model-instance pool: ``running <= len(models)``, ``queued <= max_queue``."""

    def __init__(self, models: list[Model], max_queue: int):
        self.models, self.max_queue = models, max_queue
        self.executor = ThreadPoolExecutor(max_workers=len(models), thread_name_prefix="generate")
        self.free: asyncio.Queue[Model] | None = None
        self.admitted = self.running = self.completed = self.cancelled = 0

    @property
    def queued(self) -> int:
        return self.admitted - self.running

    def admit(self) -> Admission:
        """A place in the queue, or QueueFull (answered 429) when every place is taken."""
        if self.admitted >= len(self.models) + self.max_queue:
            raise QueueFull
        return Admission(self)

    async def stream(self, model: Model, prompt: PreparedPrompt, **options) -> AsyncIterator[StreamChunk]:
        """Run ``model.stream`` in a worker thread and hand its chunks to the event loop.

        Closing or cancelling this generator (a client disconnect, a shutdown) sets the
        cancel flag the decode loop checks between tokens, then waits, shielded, until the
        thread has let go of the model, so an instance never serves two requests at once.
        """
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        done = object()

        def work() -> None:
            try:
                for chunk in model.stream(prompt, cancel=cancel.is_set, **options):
                    loop.call_soon_threadsafe(chunks.put_nowait, chunk)
            except Exception as exc:  # handed to the request, answered there
                loop.call_soon_threadsafe(chunks.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(chunks.put_nowait, done)

        worker = loop.run_in_executor(self.executor, work)
        finished = False
        try:
            while (item := await chunks.get()) is not done:
                if isinstance(item, Exception):
                    raise item
                yield item
            finished = True
        finally:
            cancel.set()
            with anyio.CancelScope(shield=True):
                await worker
            if finished:
                self.completed += 1
            else:
                self.cancelled += 1


class Admission:
    """One admitted request: counted as queued until it holds a model instance.

    ``release`` is idempotent; the server calls it when the request's response ends,
    however it ends (a streamed body that never started included), and ``model()``
    calls it when the instance is given back.
    """

    def __init__(self, scheduler: Scheduler):
        self.scheduler, self.released = scheduler, False
        scheduler.admitted += 1

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.scheduler.admitted -= 1

    @asynccontextmanager
    async def model(self) -> AsyncIterator[Model]:
        scheduler = self.scheduler
        if scheduler.free is None:  # created on first use: it belongs to the server's event loop
            scheduler.free = asyncio.Queue()
            for instance in scheduler.models:
                scheduler.free.put_nowait(instance)
        try:
            model = await scheduler.free.get()
            scheduler.running += 1
            try:
                yield model
            finally:
                scheduler.running -= 1
                scheduler.free.put_nowait(model)
        finally:
            self.release()
