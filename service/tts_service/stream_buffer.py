"""One streamed response's audio on its way from the inference thread to the client.

The worker thread puts chunks in (:meth:`~StreamBuffer.put`) as the engine makes them; the
response's coroutine awaits :meth:`~StreamBuffer.get`.  The buffer is what lies between a
fast engine and a client that reads slowly, so it is bounded: once a chunk arrives that
would make more than ``max_samples`` wait (``TTS_STREAM_BUFFER_S`` seconds of audio) the
stream is cut off -- its chunks are dropped at once, the engine is told to stop making
audio for it, and the reader gets :class:`~tts_service.errors.StreamBufferFull`.  A chunk
that finds the buffer empty is always taken, so a bound shorter than one chunk (an espeak
sentence, ChatTTS's 24 tokens) still streams; the memory held is at most the bound or one
chunk, whichever is larger.  Blocking the engine instead
would stall every other request in its batch for one slow reader.

When the reader goes away (the client disconnected) :meth:`close` drops whatever is
buffered and :attr:`wanted` turns false, which lets the engine free the stream's slot in
its batch where it can.
"""

from __future__ import annotations

import asyncio
import enum
import threading
from collections import deque
from collections.abc import Callable

import numpy as np

from .errors import StreamBufferFull


class _State(enum.Enum):
    OPEN = "open"  # chunks may arrive
    ENDED = "ended"  # the synthesis finished: what is buffered is all there is
    OVERFLOWED = "overflowed"  # the reader fell too far behind: cut off
    CLOSED = "closed"  # the reader went away


class StreamBuffer:
    """Bounded chunks of one stream; the producer is a thread, the consumer the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_samples: int, sample_rate: int) -> None:
        self._loop = loop
        self.max_samples = max_samples
        self._sample_rate = sample_rate
        self._lock = threading.Lock()
        self._chunks: deque[np.ndarray] = deque()
        self._samples = 0
        self._state = _State.OPEN
        self._readable = asyncio.Event()
        self._on_overflow: Callable[[], None] | None = None

    # -- the inference thread -------------------------------------------------------

    @property
    def wanted(self) -> bool:
        """Whether the audio still has a reader (false once cut off or closed)."""
        return self._state is _State.OPEN

    def put(self, chunk: np.ndarray) -> bool:
        """Buffer ``chunk``; False when it was not taken (nobody reads, or it overflowed now)."""
        with self._lock:
            if self._state is not _State.OPEN:
                return False
            overflow = self._samples > 0 and self._samples + chunk.size > self.max_samples
            if overflow:
                self._state = _State.OVERFLOWED
                self._chunks.clear()
                self._samples = 0
            else:
                self._chunks.append(chunk)
                self._samples += chunk.size
        self._notify(overflow)
        return not overflow

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
            self._chunks.clear()
            self._samples = 0
        self._readable.set()

    async def get(self) -> np.ndarray | None:
        """The next chunk, or None at the end; raises :class:`StreamBufferFull` if cut off."""
        while True:
            with self._lock:
                if self._chunks:
                    chunk = self._chunks.popleft()
                    self._samples -= chunk.size
                    return chunk
                if self._state is _State.OVERFLOWED:
                    raise self.overflow_error()
                if self._state is not _State.OPEN:
                    return None
                # Cleared under the lock: a put after this check schedules a set that runs later.
                self._readable.clear()
            await self._readable.wait()
