"""The batcher's queue: its entries in line, and which of them form the next batch.

Kept apart from :mod:`.batcher`'s loop so the order and the fairness rule read on their own.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .errors import DeadlineExceeded

T = TypeVar("T")
R = TypeVar("R")


@dataclass(eq=False)
class Request:
    """One caller's items: they share a deadline and leave together."""

    enqueued_at: float
    deadline: float
    started: bool = False  # some item was taken into a batch
    entries: list[Entry] = field(default_factory=list)
    running: int = 0  # its items in the batch being processed
    waiting_since: float | None = None  # since when it waits with none of its items running

    def __post_init__(self) -> None:
        self.waiting_since = self.enqueued_at


@dataclass(eq=False)
class Entry(Generic[T, R]):
    item: T
    key: Hashable
    future: asyncio.Future[R]
    request: Request
    order: int  # place in the queue; moves back once the request had items in a batch
    cost: float = 1.0  # how long the item holds a batch (the engine's estimate)
    started: bool = field(default=False)

    @property
    def enqueued_at(self) -> float:
        return self.request.enqueued_at

    @property
    def deadline(self) -> float:
        return self.request.deadline


def fair_batch(candidates: Sequence[Entry], max_size: int) -> list[Entry]:
    """Up to ``max_size`` of ``candidates`` (in queue order), round-robin over their requests."""
    per_request: dict[int, list[Entry]] = {}
    for entry in candidates:
        per_request.setdefault(id(entry.request), []).append(entry)
    batch: list[Entry] = []
    for round_ in itertools.count():
        taken = [entries[round_] for entries in per_request.values() if round_ < len(entries)]
        if not taken:
            return batch
        batch.extend(taken[: max_size - len(batch)])
        if len(batch) >= max_size:
            return batch
    raise AssertionError("unreachable")


def deadline_error(started: bool) -> DeadlineExceeded:
    """What an item whose request's deadline passed fails with."""
    where = "while it was being synthesized" if started else "while it was queued"
    return DeadlineExceeded(f"the request's deadline passed {where}")


class BatchQueue(Generic[T, R]):
    """Waiting entries in line (by ``order``); items taken into a batch leave it."""

    def __init__(self) -> None:
        self._entries: list[Entry[T, R]] = []
        self._order = itertools.count()

    def __iter__(self) -> Iterator[Entry[T, R]]:
        return iter(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def next_order(self) -> int:
        return next(self._order)

    def add(self, entries: Sequence[Entry[T, R]]) -> None:
        self._entries.extend(entries)

    def remove(self, entries: Sequence[Entry]) -> None:
        gone = {id(e) for e in entries}
        self._entries = [e for e in self._entries if id(e) not in gone]

    def clear(self) -> list[Entry[T, R]]:
        """Empty the queue; return what was in it."""
        entries, self._entries = self._entries, []
        return entries

    @property
    def requests(self) -> int:
        """Requests with live entries waiting."""
        return len({id(e.request) for e in self._entries if not e.future.done()})

    @property
    def items(self) -> int:
        return sum(1 for e in self._entries if not e.future.done())

    def purge(self, now: float) -> None:
        """Drop entries whose caller went away; fail those whose deadline passed."""
        kept: list[Entry[T, R]] = []
        for e in self._entries:
            if e.future.done():
                continue
            if e.deadline <= now:
                e.future.set_exception(deadline_error(e.request.started))
                continue
            kept.append(e)
        self._entries = kept

    def ready(self, eligible: Callable[[T], bool]) -> list[Entry[T, R]]:
        """The entries that may start now, in line."""
        return [e for e in self._entries if eligible(e.item)]

    def requeue(self, batch: Sequence[Entry]) -> None:
        """Requests just served go to the back of the line, behind those that arrived meanwhile."""
        served = {id(e.request) for e in batch}
        for e in self._entries:
            if id(e.request) in served:
                e.order = next(self._order)
        self._entries.sort(key=lambda e: e.order)
