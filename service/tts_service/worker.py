"""The inference worker: the one thread that owns the engine.

Engines are not thread-safe (eSpeak NG crashes when two threads use it; a GPU model is
best driven from one thread anyway), so every engine call -- load, warmup, synthesize,
close -- goes through a single-thread executor.  The event loop never blocks on the
engine: the batcher awaits :meth:`InferenceWorker.synthesize`.

The worker also checks what the engine returns: one array per item, 1-D, finite.  A
bad array fails only its own request (a NaN in one row does not fail the batch).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .engines.base import Engine, SynthesisItem
from .errors import EngineError, TTSError
from .metrics import Metrics

log = logging.getLogger("tts_service.worker")


class InferenceWorker:
    """Runs every call to one engine on one dedicated thread."""

    def __init__(self, engine: Engine, metrics: Metrics | None = None) -> None:
        self.engine = engine
        self._metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts-inference")

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def start(self, warmup: bool) -> tuple[float, float]:
        """Load the engine (and warm it up); return the seconds each took."""
        started = time.perf_counter()
        await self._run(self.engine.load)
        loaded = time.perf_counter()
        log.info("engine %s loaded in %.2fs", self.engine.name, loaded - started)
        if warmup:
            await self._run(self.engine.warmup)
            log.info("engine %s warmed up in %.2fs", self.engine.name, time.perf_counter() - loaded)
        return loaded - started, time.perf_counter() - loaded

    async def synthesize(self, items: list[SynthesisItem]) -> list[np.ndarray | TTSError | int]:
        """The batcher's ``process``: one engine call on the worker thread.

        A batch of streamed items (they carry a ``sink``; the batcher never mixes them with
        others) is fed to their sinks chunk by chunk; each item's result is then its
        number of samples instead of its audio.
        """
        if items and items[0].sink is not None:
            return await self._run(self._stream_checked, items)
        return await self._run(self._synthesize_checked, items)

    def _stream_checked(self, items: Sequence[SynthesisItem]) -> list[int | TTSError]:
        """Run ``engine.synthesize_stream`` and pass each item's chunks to its sink.

        Before any chunk has gone out a failure is raised (the batcher may retry the batch
        in halves; nothing is duplicated).  After that a failure can only end the streams:
        every unfinished item gets the error.  A malformed chunk fails its own item only.
        """
        started = time.perf_counter()
        totals: list[int | TTSError] = [0] * len(items)
        emitted = False
        try:
            for chunks in self.engine.synthesize_stream(items):
                if len(chunks) != len(items):
                    raise EngineError(f"the engine streamed {len(chunks)} chunks for {len(items)} items")
                for i, (item, chunk) in enumerate(zip(items, chunks, strict=True)):
                    if isinstance(totals[i], TTSError) or chunk.size == 0:
                        continue
                    checked = self._check(chunk)
                    if isinstance(checked, TTSError):
                        totals[i] = checked
                        continue
                    assert item.sink is not None
                    item.sink(checked)
                    totals[i] += checked.size  # type: ignore[operator]
                    emitted = True
        except Exception as exc:
            error = exc if isinstance(exc, TTSError) else _engine_error(exc)
            if not emitted:
                raise error from exc
            log.warning("streamed batch of %d failed after audio was sent: %s", len(items), error)
            return [t if isinstance(t, TTSError) else error for t in totals]
        finally:
            self._observe(time.perf_counter() - started)
        return totals

    def _observe(self, seconds: float) -> None:
        if self._metrics is None:
            return
        self._metrics.inference_duration.observe(seconds)
        memory = self.engine.device_memory()
        if memory is not None:
            self._metrics.device_memory_allocated.set(memory[0])
            self._metrics.device_memory_reserved.set(memory[1])

    def _synthesize_checked(self, items: Sequence[SynthesisItem]) -> list[np.ndarray | TTSError]:
        started = time.perf_counter()
        try:
            arrays = self.engine.synthesize(items)
        except TTSError:
            raise
        except Exception as exc:
            raise _engine_error(exc) from exc
        finally:
            self._observe(time.perf_counter() - started)
        if len(arrays) != len(items):
            # The batcher retries the items one by one after this.
            raise EngineError(f"the engine returned {len(arrays)} results for {len(items)} items")
        return [self._check(array) for array in arrays]

    def _check(self, array: object) -> np.ndarray | TTSError:
        if not isinstance(array, np.ndarray) or array.ndim != 1:
            return EngineError("the engine returned malformed audio (not a 1-D array)")
        if not np.all(np.isfinite(array)):
            return EngineError("the engine returned audio containing NaN or infinite samples")
        if self._metrics is not None:
            self._metrics.audio_seconds.inc(array.size / self.engine.sample_rate)
        return array.astype(np.float32, copy=False)

    async def close(self) -> None:
        """Release the engine on its own thread, then stop the thread."""
        try:
            await self._run(self.engine.close)
        finally:
            self._executor.shutdown(wait=True)


def _engine_error(exc: Exception) -> EngineError:
    """An engine's own exception as the error its requests get (a 500 that says what happened)."""
    return EngineError(f"synthesis failed: {type(exc).__name__}: {exc}")
