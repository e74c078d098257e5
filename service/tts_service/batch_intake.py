"""The intake every scheduler shares: bounded queue, deadlines, cancellation, results, drain.

Two loops take the queued entries to the engine: :class:`~tts_service.batcher.DynamicBatcher`
(request-level batches, ``TTS_SCHEDULER=request``) and
:class:`~tts_service.continuous_batcher.ContinuousBatcher` (rows that join and leave a running
generation at token steps, ``TTS_SCHEDULER=continuous``).  What a request is promised --
a 503 when the queue is full, one deadline for all its segments, cancellation that frees
its place, a failure that fails it alone, an answer to everything queued on shutdown --
lives here once, so both loops keep it.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, Protocol, TypeVar

from .batch_queue import BatchQueue, Entry, Request, deadline_error
from .errors import Draining, EngineFailed, QueueFull

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("tts_service.batcher")


class BatchObserver(Protocol):
    """Told about every batch the batcher forms (the metrics implement this)."""

    def batch_formed(self, size: int, queue_waits_s: Sequence[float]) -> None:
        """``queue_waits_s``: for each request in this batch that was waiting with none of its
        items running, how long it waited -- from arrival for its first batch, and for a long
        request's later batches from the end of its previous one.  Length-independent: a
        long text alone waits ~0 between its batches; behind others, each turn counts."""


class BatchIntake(abc.ABC, Generic[T, R]):
    """What every scheduler shares: the bounded queue, per-request deadlines, cancellation,
    results, failure of the engine and the drain.  Subclasses implement ``_run``, the loop
    that takes entries from ``self._queue`` to the consumer and settles them."""

    loop_name = "tts-batcher"

    def __init__(
        self,
        *,
        max_batch_size: int,
        max_queue_size: int,
        default_timeout_s: float,
        key: Callable[[T], Hashable] = lambda item: None,
        eligible: Callable[[T], bool] = lambda item: True,
        cost: Callable[[T], float] = lambda item: 1.0,
        observer: BatchObserver | None = None,
        on_engine_failed: Callable[[EngineFailed], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue_size < 1:
            raise ValueError("max_batch_size and max_queue_size must be >= 1")
        self.max_batch_size = max_batch_size
        self.max_queue_size = max_queue_size
        self.default_timeout_s = default_timeout_s
        self._key = key
        self._eligible = eligible
        self._cost = cost
        self._observer = observer
        self._on_engine_failed = on_engine_failed
        self._failed: EngineFailed | None = None
        self._queue: BatchQueue[T, R] = BatchQueue()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._in_flight: list[Entry[T, R]] = []
        # When a request last arrived while others were queued or running (None: never): the
        # evidence that more requests are about to arrive (adaptive admission, batcher.py).
        self.busy_arrival_at: float | None = None

    # -- intake ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.loop_name)

    @property
    def queue_depth(self) -> int:
        """Requests with items waiting to be taken into a batch (not counting running ones)."""
        return self._queue.requests

    @property
    def queued_items(self) -> int:
        """Items waiting to be taken into a batch."""
        return self._queue.items

    @property
    def held_back(self) -> int:
        """Items waiting that are not ``eligible`` now (streams whose reader is behind)."""
        return sum(1 for e in self._queue if not e.future.done() and not self._eligible(e.item))

    @property
    def in_flight(self) -> int:
        """Items the consumer is working on now (the running batch, or the active rows)."""
        return len(self._in_flight)

    @property
    def closing(self) -> bool:
        """Intake has stopped: :meth:`close` was called, or the engine failed."""
        return self._closing

    def submit(self, item: T, timeout_s: float | None = None) -> Entry[T, R]:
        """Queue ``item`` as a request of its own; see :meth:`submit_all`."""
        return self.submit_all([item], timeout_s)[0]

    def submit_all(self, items: Sequence[T], timeout_s: float | None = None) -> list[Entry[T, R]]:
        """Queue one request's ``items`` (in order, one deadline); raise at once if the batcher
        is closing or ``max_queue_size`` requests wait already."""
        if not items:
            raise ValueError("a request needs at least one item")
        if self._failed is not None:
            raise EngineFailed(self._failed.message)
        if self._closing:
            raise Draining("the service is shutting down and takes no new requests")
        if self._task is None or self._task.done():
            raise Draining("the batcher is not running")
        if self.queue_depth >= self.max_queue_size:
            self._purge()
            if self.queue_depth >= self.max_queue_size:
                raise QueueFull(f"the request queue is full ({self.max_queue_size} waiting); retry shortly")
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._queue.items or self._in_flight:
            self.busy_arrival_at = now  # it found company: traffic overlaps
        timeout = self.default_timeout_s if timeout_s is None else timeout_s
        request = Request(now, now + timeout)
        entries: list[Entry[T, R]] = [
            Entry(
                item,
                self._key(item),
                loop.create_future(),
                request,
                self._queue.next_order(),
                self._cost(item),
            )
            for item in items
        ]
        request.entries = entries
        self._queue.add(entries)
        self._changed()
        return entries

    async def infer(self, item: T, timeout_s: float | None = None) -> R:
        """Submit ``item`` and wait for its result until its deadline."""
        return await self.result(self.submit(item, timeout_s))

    async def result(self, entry: Entry[T, R]) -> R:
        """Wait for a submitted item's result until its deadline; cancelling drops the item."""
        remaining = entry.deadline - asyncio.get_running_loop().time()
        try:
            return await asyncio.wait_for(asyncio.shield(entry.future), remaining)
        except TimeoutError:
            self.cancel(entry)
            raise deadline_error(entry.started) from None
        except asyncio.CancelledError:
            self.cancel(entry)  # the caller went away: never compute it
            raise

    async def results(self, entries: Sequence[Entry[T, R]]) -> list[R]:
        """All of one request's results, in order, until its deadline.  The first item that
        fails fails the request: its other items are dropped (or ignored if running)."""
        futures = [e.future for e in entries]
        remaining = entries[0].deadline - asyncio.get_running_loop().time()
        try:
            done, pending = await asyncio.wait(
                futures, timeout=remaining, return_when=asyncio.FIRST_EXCEPTION
            )
        except asyncio.CancelledError:
            self.cancel_all(entries)
            raise
        for future in done:
            if not future.cancelled() and future.exception() is not None:
                self.cancel_all(entries)
                raise future.exception()  # type: ignore[misc]
        if pending:
            started = any(e.started for e in entries)
            self.cancel_all(entries)
            raise deadline_error(started)
        return [future.result() for future in futures]

    def cancel(self, entry: Entry[T, R]) -> None:
        """The caller no longer wants ``entry``: dropped if still queued (it frees its place at
        once), its result ignored if it is running."""
        self.cancel_all([entry])

    def cancel_all(self, entries: Sequence[Entry[T, R]]) -> None:
        """:meth:`cancel` for each of ``entries`` (a request the caller gave up on)."""
        for entry in entries:
            if entry.future.done():
                if not entry.future.cancelled():
                    entry.future.exception()  # retrieved: the caller has its answer already
            else:
                entry.future.cancel()
        self._queue.remove([e for e in entries if not e.started])
        if any(e.started for e in entries):
            self._changed()  # a running item to drop (the continuous scheduler drops its row)

    def _changed(self) -> None:
        """Something the loop acts on changed: new items, a cancelled running one, closing."""
        self._wakeup.set()

    def poke(self) -> None:
        """Something that ``eligible`` reads changed: look at the queue again."""
        self._changed()

    # -- the loop -------------------------------------------------------------------

    async def _loop(self) -> None:
        try:
            await self._run()
        finally:
            self._fail_leftovers()

    @abc.abstractmethod
    async def _run(self) -> None:
        """Take queued entries to the consumer until closing and nothing is left."""

    def _purge(self) -> None:
        self._queue.purge(asyncio.get_running_loop().time())

    def _ready(self) -> list[Entry[T, R]]:
        return self._queue.ready(self._eligible)

    @staticmethod
    def _mark_started(entries: Sequence[Entry[T, R]], now: float) -> list[float]:
        """``entries`` go to the consumer now; return, for each of their requests that was
        waiting with none of its items running, how long it waited (the queue-wait metric)."""
        requests = {id(e.request): e.request for e in entries}.values()
        waits: list[float] = []
        for e in entries:
            e.started = True
            e.request.started = True
        for request in requests:
            if request.running == 0 and request.waiting_since is not None:
                waits.append(now - request.waiting_since)
                request.waiting_since = None
        for e in entries:
            e.request.running += 1
        return waits

    @staticmethod
    def _mark_finished(entries: Sequence[Entry[T, R]], now: float) -> None:
        """``entries`` left the consumer; a request with items still to run waits again from now."""
        requests = {id(e.request): e.request for e in entries}.values()
        for e in entries:
            e.request.running -= 1
        for request in requests:
            if request.running == 0 and any(not x.started and not x.future.done() for x in request.entries):
                request.waiting_since = now  # its next items wait for the engine from now

    def _settle(self, entry: Entry[T, R], outcome: object) -> None:
        """Answer ``entry``; a failure fails its request: its other items are dropped if queued,
        and not retried (their results ignored) if in a batch being split."""
        if entry.future.done():
            return  # the caller gave up (deadline or disconnect) while it ran
        if not isinstance(outcome, BaseException):
            entry.future.set_result(outcome)  # type: ignore[arg-type]
            return
        entry.future.set_exception(outcome)
        rest = [e for e in entry.request.entries if e is not entry and not e.future.done()]
        if rest:
            self.cancel_all(rest)

    def _engine_failed(self, error: EngineFailed) -> None:
        """The consumer is broken for good: answer everything with ``error`` and stop."""
        log.error("engine failed; failing %d queued requests: %s", self.queue_depth, error.message)
        self._failed = error
        self._closing = True
        for e in [*self._in_flight, *self._queue.clear()]:
            if not e.future.done():
                e.future.set_exception(error)
        self._changed()
        if self._on_engine_failed is not None:
            self._on_engine_failed(error)

    def _fail_leftovers(self) -> None:
        for e in [*self._in_flight, *self._queue.clear()]:
            if not e.future.done():
                e.future.set_exception(Draining("the service stopped before this request ran"))

    # -- shutdown -------------------------------------------------------------------

    async def close(self, timeout_s: float | None = None) -> None:
        """Stop intake, finish all queued and in-flight items, then stop the loop.

        After ``timeout_s`` the loop is cancelled and whatever is left fails with
        :class:`~tts_service.errors.Draining`.
        """
        self._closing = True
        self._changed()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            log.warning("drain timeout of %.1fs passed; failing %d requests", timeout_s, self.queue_depth)
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
