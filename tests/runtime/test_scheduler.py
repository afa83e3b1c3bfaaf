"""The model pool under early exits: an instance goes back only once its worker thread has
stopped, and admissions are given back however a request ends."""

from __future__ import annotations

import asyncio

import pytest

from edgedistill.runtime import load
from edgedistill.runtime.scheduler import QueueFull, Scheduler
from edgedistill.runtime.server import Generation


@pytest.fixture(scope="module")
def long_model(long_context_onnx):
    return load(long_context_onnx, threads=1)


def _generation(scheduler: Scheduler, model) -> Generation:
    prompt = model.prepare("The json module")
    sampling = {"temperature": 0.0, "ignore_eos": True}
    return Generation(scheduler, scheduler.admit(), [(0, prompt, sampling)], [], max_tokens=6000)


def test_closing_a_stream_early_returns_the_model_only_after_its_worker_stopped(long_model):
    async def scenario():
        scheduler = Scheduler([long_model], max_queue=0)
        generation = _generation(scheduler, long_model)
        chunks = generation.chunks()
        for _ in range(3):
            await chunks.__anext__()
        busy = (scheduler.running, scheduler.admitted)

        await chunks.aclose()  # what a disconnect does to the response's generator

        worker_idle = scheduler.executor.submit(lambda: None).result(timeout=1) is None  # the one thread is free
        return busy, (scheduler.running, scheduler.admitted, scheduler.cancelled, scheduler.free.qsize()), worker_idle

    busy, after, worker_idle = asyncio.run(scenario())

    assert busy == (1, 1)
    assert after == (0, 0, 1, 1)  # not running, not admitted, counted as cancelled, back in the pool
    assert worker_idle


def test_admissions_are_bounded_and_released_once(long_model):
    scheduler = Scheduler([long_model], max_queue=1)

    first, second = scheduler.admit(), scheduler.admit()
    with pytest.raises(QueueFull):
        scheduler.admit()
    first.release()
    first.release()  # idempotent

    assert scheduler.admitted == 1
    second.release()
    assert scheduler.admitted == 0
