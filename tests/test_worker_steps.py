"""The worker's side of continuous batching: several token steps per call, back at once when woken."""

from __future__ import annotations

import threading

import numpy as np
from tts_service.engines.base import DecodeLoop, Engine, StepOutput, SynthesisItem
from tts_service.worker import MAX_STEPS_PER_CALL, InferenceWorker, Job


class CountingLoop(DecodeLoop):
    """Rows that end after as many steps as their text has characters."""

    def __init__(self) -> None:
        self.left: dict[int, int] = {}
        self.steps = 0

    @property
    def rows(self) -> int:
        return len(self.left)

    def admit(self, row, item, *, stream, eager):
        self.left[row] = len(item.text)

    def drop(self, row):
        self.left.pop(row, None)

    def step(self) -> StepOutput:
        self.steps += 1
        out = StepOutput()
        for row in list(self.left):
            self.left[row] -= 1
            if self.left[row] == 0:
                out.finished[row] = np.zeros(10, dtype=np.float32)
                del self.left[row]
        return out


class LoopEngine(Engine):
    name = "loop"
    has_decode_loop = True

    def __init__(self) -> None:
        self.loop = CountingLoop()

    def voices(self):
        return []

    def aliases(self):
        return {}

    def resolve_voice(self, requested, text):
        raise NotImplementedError

    def load(self) -> None:
        pass

    def synthesize(self, items):
        raise NotImplementedError

    def decode_loop(self) -> DecodeLoop:
        return self.loop


def job(text: str) -> Job:
    return Job(SynthesisItem(text, voice=None))  # type: ignore[arg-type]


async def started_worker() -> tuple[InferenceWorker, LoopEngine]:
    engine = LoopEngine()
    worker = InferenceWorker(engine)
    await worker.start(warmup=False)
    assert await worker.start_rows(warmup=False)
    return worker, engine


async def test_steps_run_on_until_a_row_leaves():
    worker, engine = await started_worker()
    try:
        left, steps = await worker.step([(0, job("x" * 5)), (1, job("x" * 9))], [], threading.Event())
        assert (set(left), steps, engine.loop.steps) == ({0}, 5, 5)  # one call, five tokens
        left, steps = await worker.step([], [], threading.Event())
        assert (set(left), steps) == ({1}, 4)
    finally:
        await worker.close()


async def test_a_wake_returns_after_one_step_and_a_long_row_after_the_cap():
    worker, engine = await started_worker()
    try:
        wake = threading.Event()
        wake.set()  # the batcher has something to admit: come back after this step
        left, steps = await worker.step([(0, job("x" * (3 * MAX_STEPS_PER_CALL)))], [], wake)
        assert (left, steps) == ({}, 1)
        left, steps = await worker.step([], [], threading.Event())
        assert (left, steps) == ({}, MAX_STEPS_PER_CALL)
        left, steps = await worker.step([], [0], threading.Event())  # dropped: nothing runs
        assert (left, engine.loop.rows) == ({}, 0)
    finally:
        await worker.close()
