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
* **Adaptive admission: no fixed wait.**  ``max_wait_s`` is an upper bound, waited only when
  company is expected: when some request arrived, within the last :data:`COMPANY_WINDOW_S`,
  while others were queued or running (traffic overlaps).  A lone client -- each request
  arriving after the previous one was answered -- never waits: a free consumer takes it at
  once.  Items that arrive while a batch runs form the next one whatever the rule says.
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

The intake (queue, bounds, deadlines, cancellation, results, drain) is
:class:`~tts_service.batch_intake.BatchIntake`, shared with the continuous scheduler.  The
batcher knows nothing about engines or HTTP; it is tested on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from .batch_intake import BatchIntake, BatchObserver
from .batch_queue import Entry, fair_batch
from .errors import EngineError, EngineFailed

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("tts_service.batcher")

ProcessFn = Callable[[list[T]], Awaitable[Sequence["R | BaseException"]]]
# An item may join a batch whose head costs at least 1/MAX_STRETCH of it (see the module doc).
MAX_STRETCH = 3.0
# A free consumer waits up to max_wait_s for batch-mates only if a request arrived while others
# were in the system this recently (adaptive admission, see the module doc).
COMPANY_WINDOW_S = 1.0

__all__ = ["MAX_STRETCH", "BatchObserver", "DynamicBatcher"]


class DynamicBatcher(BatchIntake[T, R]):
    """Collects items into batches for one consumer; see the module docstring."""

    def __init__(
        self,
        process: ProcessFn,
        *,
        max_wait_s: float,
        max_stretch: float = MAX_STRETCH,
        **intake: Any,
    ) -> None:
        """``intake``: :class:`~tts_service.batch_intake.BatchIntake`'s arguments."""
        super().__init__(**intake)
        self._process = process
        self.max_wait_s = max(0.0, max_wait_s)
        self.max_stretch = max_stretch

    async def _run(self) -> None:
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

    def company_expected(self, now: float) -> bool:
        """Whether requests have been overlapping lately, so a batch-mate is worth waiting for."""
        return self.busy_arrival_at is not None and now - self.busy_arrival_at <= COMPANY_WINDOW_S

    async def _collect(self, head: Entry[T, R]) -> list[Entry[T, R]]:
        loop = asyncio.get_running_loop()
        wait = self.max_wait_s if self.company_expected(loop.time()) else 0.0
        close_at = head.enqueued_at + wait
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
        waits = self._mark_started(batch, loop.time())
        if self._observer is not None:
            self._observer.batch_formed(len(batch), waits)
        self._in_flight = batch  # left set if cancelled, so _fail_leftovers answers them
        await self._process_halving(batch)
        self._in_flight = []
        self._mark_finished(batch, loop.time())
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
