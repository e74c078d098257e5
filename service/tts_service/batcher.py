"""The dynamic batcher: many concurrent requests in, few large engine calls out.

Modelled on Ray Serve's ``_BatchQueue`` (one queue, a future per item, one loop task that
forms batches and hands each to ``process``, the inference worker), with vLLM's view of
fairness: the unit of work is an *item* (a segment of a request's text), the unit of
admission, deadlines and cancellation is the *request* (:meth:`submit_all` submits a
request's items together).

* A batch is formed from the first waiting item in queue order (the *head*) plus later
  items with the same *batch key* (items with different voices or sampling parameters
  cannot share an engine call), up to ``max_batch_size`` items, or until ``max_wait_s``
  after the head's request arrived, whichever comes first.  A full batch never waits.
* **Fair across requests.**  Items are taken round-robin over the requests they belong
  to (one item of each request in queue order, then a second of each, ...), and once a
  request had items in a batch its remaining items move to the back of the queue.  A long
  request fills batches alone when nothing else waits, yet a short request that arrives
  behind it waits for at most the batch that is running, not for the long one's text.
* **No row holds its batch much longer than its head.**  A batch lasts as long as its
  costliest item (an engine generates every row to the end), so an item joins only if its
  ``cost`` is at most ``max_stretch`` times the head's: a short request at the head of the
  line is not batched with a long text's segments (it would wait for them), while shorter
  items may join a long head's batch (they would wait for it anyway).
* While ``process`` runs, new items queue up; with one worker this is what turns load
  into larger batches.
* The queue is bounded in requests: beyond ``max_queue_size`` requests with items
  waiting, :meth:`submit_all` raises :class:`~tts_service.errors.QueueFull` at once.
* Each request has one deadline for all its items.  An item whose deadline passed before
  it was taken into a batch fails with :class:`~tts_service.errors.DeadlineExceeded` and is
  never computed; an item whose caller went away (its future cancelled) is dropped the same
  way, and :meth:`results` drops a request's other items as soon as one fails.
* An item that is not ``eligible`` (a stream whose reader is far behind) keeps its place
  but is skipped until :meth:`poke` says things changed.
* Results are matched to items by the batch list handed to ``process``, and their count
  is checked against the batch size.  ``process`` may return an exception in place of one
  result: only that item fails.  If ``process`` raises, the batch is split in halves and
  each half retried (recursively): a batch too large for memory is retried smaller, and
  one poisoned input ends up failing alone, not its batch-mates.
* Unless ``process`` raises :class:`~tts_service.errors.EngineFailed`: the consumer can
  never succeed again (a broken device), so retrying would only burn the queue's
  deadlines.  The batch and everything queued fail with that error at once, intake stops,
  and ``on_engine_failed`` is told.
* :meth:`close` stops intake and finishes everything already queued before returning.

The batcher knows nothing about engines or HTTP; it is tested on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, Protocol, TypeVar

from .batch_queue import BatchQueue, Entry, Request, deadline_error, fair_batch
from .errors import Draining, EngineError, EngineFailed, QueueFull

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("tts_service.batcher")

ProcessFn = Callable[[list[T]], Awaitable[Sequence["R | BaseException"]]]
# An item may join a batch whose head costs at least 1/MAX_STRETCH of it (see the module doc).
MAX_STRETCH = 3.0


class BatchObserver(Protocol):
    """Told about every batch the batcher forms (the metrics implement this)."""

    def batch_formed(self, size: int, queue_waits_s: Sequence[float]) -> None:
        """``queue_waits_s``: for each request in this batch that was waiting with none of its
        items running, how long it waited -- from arrival for its first batch, and for a long
        request's later batches from the end of its previous one.  Length-independent: a
        long text alone waits ~0 between its batches; behind others, each turn counts."""


class DynamicBatcher(Generic[T, R]):
    """Collects items into batches for one consumer; see the module docstring."""

    def __init__(
        self,
        process: ProcessFn,
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_queue_size: int,
        default_timeout_s: float,
        key: Callable[[T], Hashable] = lambda item: None,
        eligible: Callable[[T], bool] = lambda item: True,
        cost: Callable[[T], float] = lambda item: 1.0,
        max_stretch: float = MAX_STRETCH,
        observer: BatchObserver | None = None,
        on_engine_failed: Callable[[EngineFailed], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue_size < 1:
            raise ValueError("max_batch_size and max_queue_size must be >= 1")
        self._process = process
        self.max_batch_size = max_batch_size
        self.max_wait_s = max(0.0, max_wait_s)
        self.max_queue_size = max_queue_size
        self.default_timeout_s = default_timeout_s
        self._key = key
        self._eligible = eligible
        self._cost = cost
        self.max_stretch = max_stretch
        self._observer = observer
        self._on_engine_failed = on_engine_failed
        self._failed: EngineFailed | None = None
        self._queue: BatchQueue[T, R] = BatchQueue()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._in_flight: list[Entry[T, R]] = []

    # -- intake ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="tts-batcher")

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
        """Items in the batch the consumer is working on now."""
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
        self._wakeup.set()
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

    def poke(self) -> None:
        """Something that ``eligible`` reads changed: look at the queue again."""
        self._wakeup.set()

    # -- the loop -------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                head = await self._next_head()
                if head is None:
                    return
                try:
                    batch = await self._collect(head)
                    if batch:
                        await self._execute(batch)
                except asyncio.CancelledError:
                    raise
                except Exception:  # the loop must survive anything
                    log.exception("batcher loop error; continuing")
        finally:
            self._fail_leftovers()

    def _purge(self) -> None:
        self._queue.purge(asyncio.get_running_loop().time())

    def _ready(self) -> list[Entry[T, R]]:
        return self._queue.ready(self._eligible)

    async def _next_head(self) -> Entry[T, R] | None:
        while True:
            self._purge()
            ready = self._ready()
            if ready:
                return ready[0]
            if self._closing and not self._queue:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _collect(self, head: Entry[T, R]) -> list[Entry[T, R]]:
        loop = asyncio.get_running_loop()
        close_at = head.enqueued_at + self.max_wait_s
        while True:
            self._purge()
            if head.future.done() or not self._eligible(head.item):
                return []  # the head left; the next item in line starts a new batch
            longest = head.cost * self.max_stretch
            batch = fair_batch(
                [e for e in self._ready() if e.key == head.key and e.cost <= longest], self.max_batch_size
            )
            remaining = close_at - loop.time()
            if len(batch) >= self.max_batch_size or remaining <= 0 or self._closing:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                pass
        self._queue.remove(batch)
        return batch

    async def _execute(self, batch: list[Entry[T, R]]) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        requests = {id(e.request): e.request for e in batch}.values()
        waits: list[float] = []  # one per request that waited with nothing of it running
        for e in batch:
            e.started = True
            e.request.started = True
        for request in requests:
            if request.running == 0 and request.waiting_since is not None:
                waits.append(now - request.waiting_since)
                request.waiting_since = None
        for e in batch:
            e.request.running += 1
        if self._observer is not None:
            self._observer.batch_formed(len(batch), waits)
        self._in_flight = batch  # left set if cancelled, so _fail_leftovers answers them
        await self._process_halving(batch)
        self._in_flight = []
        done = loop.time()
        for e in batch:
            e.request.running -= 1
        for request in requests:
            if request.running == 0 and any(not x.started and not x.future.done() for x in request.entries):
                request.waiting_since = done  # its next items wait for the engine from now
        self._queue.requeue(batch)

    async def _process_halving(self, batch: list[Entry[T, R]]) -> None:
        """``process`` the batch; if it raises, retry it in halves (see the module docstring)."""
        try:
            results = await self._process([e.item for e in batch])
            if len(results) != len(batch):
                raise EngineError(f"the engine returned {len(results)} results for a batch of {len(batch)}")
        except EngineFailed as exc:
            self._engine_failed(exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                self._settle(batch[0], exc)
                return
            live = [e for e in batch if not e.future.done()]
            half = (len(live) + 1) // 2
            log.warning(
                "batch of %d failed (%s: %s); retrying it as two halves",
                len(batch),
                type(exc).__name__,
                exc,
            )
            # Halving (not one by one) also retries an out-of-memory batch at a size that fits,
            # and still isolates one poisoned item in O(log n) extra calls.
            for part in (live[:half], live[half:]):
                part = [e for e in part if not e.future.done() and self._failed is None]
                if part:
                    await self._process_halving(part)
            return
        for e, result in zip(batch, results, strict=True):
            self._settle(e, result)

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
        self._wakeup.set()
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
        self._wakeup.set()
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
