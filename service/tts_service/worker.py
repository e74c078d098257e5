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

    async def synthesize(self, items: list[SynthesisItem]) -> list[np.ndarray | TTSError]:
        """The batcher's ``process``: one engine call on the worker thread."""
        return await self._run(self._synthesize_checked, items)

    def _synthesize_checked(self, items: Sequence[SynthesisItem]) -> list[np.ndarray | TTSError]:
        started = time.perf_counter()
        try:
            arrays = self.engine.synthesize(items)
        except TTSError:
            raise
        except Exception as exc:
            raise EngineError(f"synthesis failed: {type(exc).__name__}: {exc}") from exc
        finally:
            if self._metrics is not None:
                self._metrics.inference_duration.observe(time.perf_counter() - started)
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
