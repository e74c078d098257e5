"""One streamed response's audio on its way from the inference thread to the client.

A streamed request is split into segments (:mod:`.segmentation`) that the batcher may run
in different batches, several at once; the buffer holds each segment's chunks apart and
hands them to the reader in segment order.  The worker thread puts chunks in
(:meth:`~StreamBuffer.put`) as the engine makes them; the response's coroutine awaits
:meth:`~StreamBuffer.get`, which yields :class:`StreamPiece` s: the segment being read,
its next chunk, and a final piece that ends the segment.

The buffer is what lies between a fast engine and a client that reads slowly, so it is
bounded by ``max_samples`` (``TTS_STREAM_BUFFER_S`` seconds of audio waiting), two ways:

* **Between segments, backpressure.**  A segment after the one being read is admitted to a
  batch only while less than ``max_samples`` waits (:meth:`admits`, the batcher's
  ``eligible``; reading pokes the batcher).  A client playing a long text in real time is
  paused, never cut off; one that stops reading holds no engine time and at most the bound
  plus one batch of segments, until its deadline.
* **Within the segment being read, cut-off.**  A generation cannot pause, so once a chunk
  of the segment being read arrives that would make more than ``max_samples`` wait, the
  stream is cut off -- its chunks are dropped at once, the engine is told to stop making
  audio for it, and the reader gets :class:`~tts_service.errors.StreamBufferFull`.  A
  chunk that finds nothing waiting is always taken, so a bound shorter than one chunk
  still streams.  Blocking the engine instead would stall every other request in its
  batch for one slow reader.

When the reader goes away (the client disconnected) :meth:`close` drops whatever is
buffered and :attr:`wanted` turns false, which lets the engine free the stream's slots in
its batch where it can.
"""

from __future__ import annotations

import asyncio
import enum
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import StreamBufferFull


class _State(enum.Enum):
    OPEN = "open"  # chunks may arrive
    ENDED = "ended"  # the synthesis finished: what is buffered is all there is
    OVERFLOWED = "overflowed"  # the reader fell too far behind: cut off
    CLOSED = "closed"  # the reader went away


@dataclass(frozen=True)
class StreamPiece:
    """What the reader gets next: a chunk of ``segment``, or (``last``) the end of it."""

    segment: int
    audio: np.ndarray
    last: bool = False


class StreamBuffer:
    """Bounded chunks of one stream's segments; the producer is a thread, the consumer the loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        max_samples: int,
        sample_rate: int,
        segments: int = 1,
        on_read: Callable[[], None] | None = None,
    ) -> None:
        self._loop = loop
        self.max_samples = max_samples
        self._sample_rate = sample_rate
        self._lock = threading.Lock()
        self._slots: list[deque[np.ndarray]] = [deque() for _ in range(segments)]
        self._ended = [False] * segments
        self._slot_samples = [0] * segments
        self._reading = 0  # the segment the reader is on
        self._samples = 0
        self._state = _State.OPEN
        self._readable = asyncio.Event()
        self._on_overflow: Callable[[], None] | None = None
        self._on_read = on_read
        self._held_back = False  # admits() said no since the last read

    # -- the inference thread -------------------------------------------------------

    @property
    def wanted(self) -> bool:
        """Whether the audio still has a reader (false once cut off or closed)."""
        return self._state is _State.OPEN

    def reading(self, segment: int) -> bool:
        """Whether the reader waits for ``segment`` now (later segments' audio can wait)."""
        return segment == self._reading

    def put(self, chunk: np.ndarray, segment: int = 0) -> bool:
        """Buffer ``chunk`` of ``segment``; False when it was not taken (nobody reads, or it
        overflowed now)."""
        with self._lock:
            if self._state is not _State.OPEN:
                return False
            waiting = self._slot_samples[segment]
            overflow = segment == self._reading and waiting > 0 and waiting + chunk.size > self.max_samples
            if overflow:
                self._state = _State.OVERFLOWED
                self._clear()
            else:
                self._slots[segment].append(chunk)
                self._slot_samples[segment] += chunk.size
                self._samples += chunk.size
        self._notify(overflow)
        return not overflow

    def _clear(self) -> None:
        for slot in self._slots:
            slot.clear()
        self._slot_samples = [0] * len(self._slots)
        self._samples = 0

    def _notify(self, overflow: bool) -> None:
        try:
            self._loop.call_soon_threadsafe(self._wake, overflow)
        except RuntimeError:
            pass  # the loop is closed: nobody is left to read

    def _wake(self, overflow: bool) -> None:
        self._readable.set()
        if overflow and self._on_overflow is not None:
            self._on_overflow()

    # -- the event loop -------------------------------------------------------------

    @property
    def buffered_samples(self) -> int:
        return self._samples

    def admits(self, segment: int) -> bool:
        """Whether ``segment`` may start now: the one being read always, later ones while
        less than the bound waits for the reader (the batcher's ``eligible``)."""
        if segment <= self._reading or self._samples < self.max_samples:
            return True
        self._held_back = True
        return False

    def end_segment(self, segment: int) -> None:
        """All of ``segment``'s chunks are in (its job finished)."""
        with self._lock:
            self._ended[segment] = True
        self._readable.set()

    @property
    def overflowed(self) -> bool:
        return self._state is _State.OVERFLOWED

    def overflow_error(self) -> StreamBufferFull:
        """What a cut-off stream ends with."""
        return StreamBufferFull(
            f"the client read this stream too slowly: more than {self.max_samples / self._sample_rate:g} s "
            f"of audio waited for it (TTS_STREAM_BUFFER_S), so it was cut off"
        )

    def on_overflow(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the loop as soon as the stream is cut off (to close the response
        even while it waits for a slow client to take bytes)."""
        self._on_overflow = callback

    def end(self) -> None:
        """The synthesis is over: the reader gets what is buffered, then the end."""
        with self._lock:
            if self._state is _State.OPEN:
                self._state = _State.ENDED
        self._readable.set()

    def close(self) -> None:
        """The reader is gone: drop everything and take nothing more."""
        with self._lock:
            if self._state is not _State.OVERFLOWED:
                self._state = _State.CLOSED
            self._clear()
        self._readable.set()

    async def get(self) -> StreamPiece | None:
        """The next piece in segment order, or None at the end; raises
        :class:`StreamBufferFull` if cut off."""
        while True:
            with self._lock:
                if self._reading < len(self._slots):
                    slot = self._slots[self._reading]
                    if slot:
                        chunk = slot.popleft()
                        self._slot_samples[self._reading] -= chunk.size
                        self._samples -= chunk.size
                        piece = StreamPiece(self._reading, chunk)
                        break
                    if self._ended[self._reading] and self._state is not _State.OVERFLOWED:
                        piece = StreamPiece(self._reading, np.zeros(0, dtype=np.float32), last=True)
                        self._reading += 1
                        break
                if self._state is _State.OVERFLOWED:
                    raise self.overflow_error()
                if self._state is not _State.OPEN or self._reading >= len(self._slots):
                    return None
                # Cleared under the lock: a put after this check schedules a set that runs later.
                self._readable.clear()
            await self._readable.wait()
        if self._held_back and self._samples < self.max_samples and self._on_read is not None:
            self._held_back = False
            self._on_read()  # a segment held back may start now
        return piece
