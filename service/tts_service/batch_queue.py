"""The batcher's queue entries, and which of them form the next batch.

Kept apart from :mod:`.batcher`'s loop so the fairness rule reads (and tests) on its own.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Hashable, Sequence
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


@dataclass(eq=False)
class Entry(Generic[T, R]):
    item: T
    key: Hashable
    future: asyncio.Future[R]
    request: Request
    order: int  # place in the queue; moves back once the request had items in a batch
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
