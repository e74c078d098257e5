"""The continuous batcher on its own, driven by a fake token loop.

The fake stands for an engine's decode loop: each item is a row that needs ``steps`` token
steps; a step can be held at a gate so the test decides what arrives while it runs.  The
tests are about admission, rows joining and leaving, bounds, deadlines, cancellation,
failures and draining -- not synthesis (tests/test_chattts_decode_loop.py is the real loop).
Synchronisation uses asyncio events, never sleeps.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from tts_service.continuous_batcher import ContinuousBatcher
from tts_service.errors import DeadlineExceeded, Draining, EngineError, EngineFailed, QueueFull

LONG = 30.0


@dataclass(frozen=True)
class Item:
    name: str
    steps: int = 3
    poison: bool = False


class FakeLoop:
    """Rows that finish after their item's number of steps; a gate holds a step."""

    def __init__(self) -> None:
        self.rows: dict[int, list] = {}  # row -> [item, steps done]
        self.steps: list[list[str]] = []  # the rows' names in each step
        self.admitted: list[list[str]] = []  # admitted at each step
        self.dropped: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.stepping = asyncio.Event()
        self.broken: Exception | None = None

    async def __call__(self, admit, drop, wake):
        for row in drop:
            item, _ = self.rows.pop(row)
            self.dropped.append(item.name)
        self.admitted.append([item.name for _, item in admit])
        for row, item in admit:
            self.rows[row] = [item, 0]
        self.steps.append([item.name for item, _ in self.rows.values()])
        self.stepping.set()
        await self.gate.wait()
        if self.broken is not None:
            raise self.broken
        left = {}
        for row, state in list(self.rows.items()):
            item = state[0]
            state[1] += 1
            if item.poison:
                left[row] = EngineError(f"{item.name} is poisoned")
            elif state[1] >= item.steps:
                left[row] = f"audio of {item.name}"
            else:
                continue
            del self.rows[row]
        return left, 1

    async def step_started(self) -> None:
        await self.stepping.wait()
        self.stepping.clear()


def make(loop: FakeLoop, **kwargs) -> ContinuousBatcher:
    options = dict(max_batch_size=2, max_queue_size=100, default_timeout_s=LONG)
    options.update(kwargs)
    batcher = ContinuousBatcher(loop, **options)
    batcher.start()
    return batcher


def queued(batcher, item: Item, timeout_s: float | None = None) -> asyncio.Future:
    return asyncio.ensure_future(batcher.result(batcher.submit(item, timeout_s)))


async def test_a_row_that_finds_room_starts_at_the_next_step_without_any_wait():
    loop = FakeLoop()
    batcher = make(loop)
    assert await asyncio.wait_for(batcher.infer(Item("a", steps=2)), 5) == "audio of a"
    assert loop.admitted[0] == ["a"] and loop.steps == [["a"], ["a"]]


async def test_rows_join_a_running_generation_and_leave_when_they_end():
    loop = FakeLoop()
    batcher = make(loop, max_batch_size=3)
    loop.gate.clear()
    long = queued(batcher, Item("long", steps=5))
    await loop.step_started()  # long runs alone
    short = queued(batcher, Item("short", steps=1))
    loop.gate.set()
    assert await asyncio.wait_for(short, 5) == "audio of short"
    assert await asyncio.wait_for(long, 5) == "audio of long"
    # short joined at the second step, left after one, while long ran on.
    assert loop.steps == [["long"], ["long", "short"], ["long"], ["long"], ["long"]]


async def test_at_most_max_batch_size_rows_are_active_and_the_rest_join_as_rows_leave():
    loop = FakeLoop()
    batcher = make(loop, max_batch_size=2)
    results = await asyncio.wait_for(
        asyncio.gather(*(batcher.infer(Item(n, steps=s)) for n, s in [("a", 1), ("b", 3), ("c", 2)])), 5
    )
    assert results == ["audio of a", "audio of b", "audio of c"]
    assert max(len(names) for names in loop.steps) == 2
    assert loop.steps[1] == ["b", "c"]  # c took a's row the step after a ended


async def test_a_cancelled_row_leaves_at_the_next_step_and_frees_its_row():
    loop = FakeLoop()
    batcher = make(loop, max_batch_size=1)
    loop.gate.clear()
    doomed = queued(batcher, Item("doomed", steps=100))
    await loop.step_started()
    waiting = queued(batcher, Item("next", steps=1))
    doomed.cancel()
    loop.gate.set()
    assert await asyncio.wait_for(waiting, 5) == "audio of next"
    assert loop.dropped == ["doomed"]
    assert sum(names == ["doomed"] for names in loop.steps) <= 2


async def test_a_deadline_during_generation_fails_that_request_and_drops_its_row():
    loop = FakeLoop()
    batcher = make(loop)
    slow = queued(batcher, Item("slow", steps=10**9), timeout_s=0.05)
    with pytest.raises(DeadlineExceeded, match="while it was being synthesized"):
        await asyncio.wait_for(slow, 5)
    assert await asyncio.wait_for(batcher.infer(Item("after", steps=1)), 5) == "audio of after"
    assert "slow" in loop.dropped


async def test_a_failing_row_fails_its_request_alone():
    loop = FakeLoop()
    batcher = make(loop, max_batch_size=3)
    results = await asyncio.gather(
        batcher.infer(Item("good")), batcher.infer(Item("bad", poison=True)), batcher.infer(Item("fine")),
        return_exceptions=True,
    )  # fmt: skip
    assert results[0] == "audio of good" and results[2] == "audio of fine"
    assert isinstance(results[1], EngineError) and "bad is poisoned" in str(results[1])


async def test_a_failing_segment_drops_its_requests_other_segments():
    loop = FakeLoop()
    batcher = make(loop, max_batch_size=1)
    entries = batcher.submit_all([Item("s1", poison=True), Item("s2"), Item("s3")])
    with pytest.raises(EngineError):
        await asyncio.wait_for(batcher.results(entries), 5)
    assert all(names == ["s1"] for names in loop.steps)  # s2 and s3 never ran


async def test_the_queue_is_bounded_in_requests():
    loop = FakeLoop()
    batcher = make(loop, max_batch_size=1, max_queue_size=1)
    loop.gate.clear()
    running = queued(batcher, Item("running"))
    await loop.step_started()
    waiting = queued(batcher, Item("waiting"))
    with pytest.raises(QueueFull):
        batcher.submit(Item("refused"))
    loop.gate.set()
    assert await asyncio.wait_for(asyncio.gather(running, waiting), 5) == [
        "audio of running",
        "audio of waiting",
    ]


async def test_a_broken_engine_fails_every_row_and_queued_request_and_stops_intake():
    loop = FakeLoop()
    batcher = make(loop, max_batch_size=1)
    loop.gate.clear()
    running = queued(batcher, Item("running", steps=5))
    await loop.step_started()
    waiting = queued(batcher, Item("waiting"))
    loop.broken = EngineFailed("the device is gone")
    loop.gate.set()
    for future in (running, waiting):
        with pytest.raises(EngineFailed):
            await asyncio.wait_for(future, 5)
    with pytest.raises(EngineFailed):
        batcher.submit(Item("later"))


async def test_a_consumer_error_fails_its_rows_and_the_loop_goes_on():
    loop = FakeLoop()
    batcher = make(loop)
    loop.broken = RuntimeError("a bug")
    with pytest.raises(EngineError, match="a bug"):
        await asyncio.wait_for(batcher.infer(Item("unlucky")), 5)
    loop.broken = None
    assert await asyncio.wait_for(batcher.infer(Item("lucky", steps=1)), 5) == "audio of lucky"
    assert loop.dropped == ["unlucky"]  # the consumer was told to let go of the failed row


async def test_close_finishes_active_rows_and_the_queue_then_refuses():
    loop = FakeLoop()
    batcher = make(loop, max_batch_size=1)
    futures = [queued(batcher, Item(n)) for n in ("a", "b", "c")]
    await batcher.close(timeout_s=LONG)
    assert [f.result() for f in futures] == ["audio of a", "audio of b", "audio of c"]
    with pytest.raises(Draining):
        batcher.submit(Item("late"))


async def test_admission_is_round_robin_over_requests():
    loop = FakeLoop()
    batcher = make(loop, max_batch_size=2)
    loop.gate.clear()
    first = batcher.submit_all([Item("long-1", 1), Item("long-2", 1), Item("long-3", 1)])
    other = batcher.submit(Item("other", 1))
    loop.gate.set()
    await asyncio.wait_for(asyncio.gather(batcher.results(first), batcher.result(other)), 5)
    # The other request got a row in the first step, next to the long one's first segment.
    assert loop.admitted[0] == ["long-1", "other"]


async def test_held_back_items_wait_until_poked():
    allowed = {"now"}
    loop = FakeLoop()
    batcher = make(loop, eligible=lambda item: item.name in allowed)
    later = queued(batcher, Item("later", 1))
    assert await asyncio.wait_for(batcher.infer(Item("now", 1)), 5) == "audio of now"
    assert not later.done()
    allowed.add("later")
    batcher.poke()
    assert await asyncio.wait_for(later, 5) == "audio of later"


async def test_every_step_is_reported_with_its_active_rows_and_admissions():
    loop = FakeLoop()
    reports: list[tuple[int, int]] = []
    batcher = make(
        loop, max_batch_size=2, on_step=lambda active, admitted: reports.append((active, admitted))
    )
    await asyncio.wait_for(asyncio.gather(batcher.infer(Item("a", 2)), batcher.infer(Item("b", 1))), 5)
    assert reports == [(2, 2), (1, 0)]
