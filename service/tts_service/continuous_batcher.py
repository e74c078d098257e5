"""The continuous batcher: rows join and leave a running generation at token steps.

vLLM's iteration-level scheduling on the project's one queue
(:class:`~tts_service.batch_intake.BatchIntake`: bounded, per-request deadlines,
cancellation, fairness, drain).  The loop runs one *step* at a time on the consumer (the
worker's :meth:`~tts_service.worker.InferenceWorker.step`: one token for every active row
of the engine's :class:`~tts_service.engines.base.DecodeLoop`); between two steps it

* drops the rows whose request went away (cancelled, deadline passed, or another of its
  segments failed): a cancelled row leaves at the next step;
* **admits** waiting items, in line and round-robin over requests, up to
  ``max_batch_size`` active rows -- at once: an item that finds a free row never waits for
  a timer, and one that arrives during a step joins at the next one (a step is one token,
  milliseconds), so there is nothing to gain by waiting and ``TTS_MAX_WAIT_MS`` does not
  apply here;
* settles the rows that left during the step: finished (their audio) or failed (their
  error, theirs alone).

The consumer may run several steps per call while nothing happens (no row leaves, nothing
to admit or drop): ``wake`` -- a thread-safe event set whenever items arrive, a running
item is cancelled or the batcher closes -- makes it return after its current step, so rows
still join at the next token step while the thread hand-off is paid per event, not per token.

Rows need not share a batch key: each row carries its own voice, speed and sampling
parameters, so any items can be active together.  ``eligible`` still holds a stream's
later segments back while its reader is behind.  Each step is reported to ``on_step``
(active rows, rows admitted) and, as a batch, to the observer (active rows; the queue
waits of the requests admitted).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .batch_intake import BatchIntake
from .batch_queue import Entry, fair_batch
from .errors import EngineError, EngineFailed

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("tts_service.batcher")

# (rows to admit: (row id, item), rows to drop, wake) -> (the rows that left: row id -> result or
# error, the number of token steps run).  The consumer may run several steps in one call, but
# returns after the first step at which a row left or ``wake`` was set.
StepFn = Callable[[list[tuple[int, T]], list[int], threading.Event], Awaitable[tuple[dict[int, Any], int]]]


class ContinuousBatcher(BatchIntake[T, R]):
    """Drives a consumer's token steps, admitting and settling rows between them."""

    loop_name = "tts-scheduler"

    def __init__(
        self,
        step: StepFn,
        *,
        on_step: Callable[[int, int], None] | None = None,
        **intake: Any,
    ) -> None:
        """``intake``: :class:`~tts_service.batch_intake.BatchIntake`'s arguments
        (``max_batch_size`` is the most active rows)."""
        super().__init__(**intake)
        self._step = step
        self._on_step = on_step
        self._rows: dict[int, Entry[T, R]] = {}
        self._ids = itertools.count()
        # Set (from the event loop) when the consumer should stop after its current step and
        # come back: items to admit, a row to drop, closing.  Read on the worker thread.
        self._wake = threading.Event()

    def _changed(self) -> None:
        super()._changed()
        self._wake.set()

    @property
    def active_rows(self) -> int:
        return len(self._rows)

    async def _run(self) -> None:
        drop: list[int] = []
        while True:
            self._purge()
            drop += [row for row, e in self._rows.items() if e.future.done()]
            for row in drop:
                if row in self._rows:
                    self._leave(row)
            admit, waits = self._admit(self.max_batch_size - len(self._rows))
            if not self._rows and not drop:
                if self._closing and not self._queue:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            active = len(self._rows)
            self._report(active, len(admit), waits)
            self._wake.clear()
            steps, broken = 1, []
            try:
                left, steps = await self._step(
                    [(row, self._rows[row].item) for row in admit], drop, self._wake
                )
            except asyncio.CancelledError:
                raise
            except EngineFailed as exc:
                self._engine_failed(exc)
                self._rows.clear()
                self._in_flight = []
                return
            except Exception as exc:  # the consumer broke: its rows fail, the loop goes on
                log.exception("decode step failed; failing its %d rows", len(self._rows))
                left = {row: EngineError(f"synthesis failed: {exc}") for row in self._rows}
                broken = list(left)  # the consumer may still hold them: dropped at the next call
            for _ in range(steps - 1):  # the call's further steps: same rows, none admitted
                self._report(active, 0, [])
            drop = broken
            for row, outcome in left.items():
                entry = self._leave(row)
                if entry is not None:
                    self._settle(entry, outcome)
            # Between steps the event loop runs (a consumer that answered without awaiting
            # anything must not starve the handlers that submit and read).
            await asyncio.sleep(0)

    def _report(self, active: int, admitted: int, waits: list[float]) -> None:
        """One token step: to ``on_step`` and, as a batch of the active rows, the observer."""
        if not active:
            return  # a call that only dropped rows: no step ran
        if self._on_step is not None:
            self._on_step(active, admitted)
        if self._observer is not None:
            self._observer.batch_formed(active, waits)

    def _admit(self, free: int) -> tuple[list[int], list[float]]:
        """Take up to ``free`` waiting items into rows (in line, round-robin over requests);
        return their row ids and the queue waits of their requests."""
        admitted = fair_batch(self._ready(), free) if free > 0 else []
        if not admitted:
            return [], []
        self._queue.remove(admitted)
        waits = self._mark_started(admitted, asyncio.get_running_loop().time())
        rows = []
        for entry in admitted:
            row = next(self._ids)
            self._rows[row] = entry
            rows.append(row)
        self._in_flight = list(self._rows.values())
        self._queue.requeue(admitted)  # a request just admitted waits behind the others
        return rows, waits

    def _leave(self, row: int) -> Entry[T, R] | None:
        entry = self._rows.pop(row, None)
        if entry is not None:
            self._mark_finished([entry], asyncio.get_running_loop().time())
            self._in_flight = list(self._rows.values())
        return entry
