"""The inference worker: the one thread that owns the engine.

Engines are not thread-safe (eSpeak NG crashes when two threads use it; a GPU model is
best driven from one thread anyway), so every engine call -- load, warmup, synthesize,
close -- goes through a single-thread executor.  The event loop never blocks on the
engine: the batcher awaits :meth:`InferenceWorker.synthesize`.

The worker also checks what the engine returns: one array per item, 1-D, finite.  A
bad array fails only its own request (a NaN in one row does not fail the batch).  And it
says what an engine's exception means (:mod:`.engines.failures`): an
:class:`~tts_service.errors.OutOfMemory` or a plain :class:`~tts_service.errors.EngineError`
is retried in halves by the batcher, an :class:`~tts_service.errors.EngineFailed` (a broken
device) ends the service's engine.

The batcher's items are jobs (:class:`Job`): one segment of a request as the engine's
:class:`SynthesisItem` plus, for a streamed request, the
:class:`~tts_service.stream_buffer.StreamBuffer` its chunks go to and which segment they are.
Delivery is the worker's business; engines only make audio.

For the continuous scheduler the worker also drives the engine's token loop
(:class:`~tts_service.engines.base.DecodeLoop`): :meth:`InferenceWorker.step` admits and
drops rows and runs token steps (several per call) on the same thread, checks each row's audio the same way
and puts a streamed row's chunks into its stream.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .engines.base import DecodeLoop, Engine, StepOutput, SynthesisItem
from .engines.failures import Failure
from .errors import ClientDisconnected, EngineError, EngineFailed, OutOfMemory, StreamBufferFull, TTSError
from .metrics import Metrics
from .stream_buffer import StreamBuffer

log = logging.getLogger("tts_service.worker")

# The continuous scheduler's consumer runs at most this many token steps per call when nothing
# happens (no row leaves, nothing to admit or drop, no deadline or cancellation: those set
# ``wake`` and end the call after its current step).  The bound only keeps the per-step metrics
# from lagging more than a few seconds behind; each return to the event loop costs the lone
# row several per cent (measured: 64 steps per call made a step ~10 % slower than 1024).
MAX_STEPS_PER_CALL = 1024


@dataclass(eq=False)
class Job:
    """One segment's work: what to synthesize, and where a stream's chunks go (None: whole)."""

    item: SynthesisItem
    stream: StreamBuffer | None = None
    segment: int = 0  # which of its request's segments (a stream's chunks go to its slot)

    @property
    def admitted(self) -> bool:
        """The batcher's ``eligible``: a stream's later segment waits while its reader is behind."""
        return self.stream is None or self.stream.admits(self.segment)


class InferenceWorker:
    """Runs every call to one engine on one dedicated thread."""

    def __init__(self, engine: Engine, metrics: Metrics | None = None) -> None:
        self.engine = engine
        self._metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts-inference")
        self._loop: DecodeLoop | None = None  # continuous batching: the engine's token loop
        self._rows: dict[int, Job] = {}  # its rows' jobs, by row id
        self._streamed: dict[int, int] = {}  # samples each streamed row has put out

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

    async def synthesize(self, jobs: list[Job]) -> list[np.ndarray | TTSError | int]:
        """The batcher's ``process``: one engine call on the worker thread.

        A batch of streamed jobs (the batcher never mixes them with whole ones) feeds each
        job's stream chunk by chunk; each job's result is then its number of samples.
        """
        if jobs and jobs[0].stream is not None:
            return await self._run(self._stream_checked, jobs)
        return await self._run(self._synthesize_checked, [job.item for job in jobs])

    def _stream_checked(self, jobs: Sequence[Job]) -> list[int | TTSError]:
        """Run ``engine.synthesize_stream`` and put each job's chunks into its stream.

        Before any chunk has gone out a failure is raised (the batcher may retry the batch
        in halves; nothing is duplicated).  After that a failure can only end the streams:
        every unfinished job gets the error -- except a broken device, which is raised so
        the batcher ends the engine.  A malformed chunk fails its own job only.  A stream
        nobody reads any more (client gone, or cut off for reading too slowly) gets no more
        audio, and once no stream of the batch is read the generation is stopped.
        """
        streams: list[StreamBuffer] = []
        for job in jobs:
            assert job.stream is not None, "streamed and whole jobs never share a batch"
            streams.append(job.stream)
        segments = [job.segment for job in jobs]
        started = time.perf_counter()
        samples = [0] * len(jobs)
        errors: list[TTSError | None] = [None] * len(jobs)
        emitted = False
        chunk_steps = self.engine.synthesize_stream(
            [job.item for job in jobs],
            wanted=lambda i: streams[i].wanted,
            eager=lambda i: streams[i].reading(segments[i]),
        )
        try:
            for chunks in chunk_steps:
                if len(chunks) != len(jobs):
                    raise EngineError(f"the engine streamed {len(chunks)} chunks for {len(jobs)} items")
                for i, (stream, chunk) in enumerate(zip(streams, chunks, strict=True)):
                    if errors[i] is not None or chunk.size == 0:
                        continue
                    checked = self._check(chunk)
                    if isinstance(checked, TTSError):
                        errors[i] = checked
                    elif stream.put(checked, segments[i]):
                        samples[i] += checked.size
                        emitted = True
                    else:
                        errors[i] = _unread(stream)
                if not any(stream.wanted for stream in streams):
                    log.info("stopping a streamed batch of %d: no stream is read any more", len(jobs))
                    break
        except Exception as exc:
            error = self._engine_error(exc)
            if not emitted or isinstance(error, EngineFailed):
                raise error from exc
            log.warning("streamed batch of %d failed after audio was sent: %s", len(jobs), error)
            return [e or error for e in errors]
        finally:
            chunk_steps.close()  # stops a generation left early, releasing what it holds
            self._observe(time.perf_counter() - started, [job.item for job in jobs])
        return [e or n for e, n in zip(errors, samples, strict=True)]

    # -- continuous batching ---------------------------------------------------------------

    async def start_rows(self, warmup: bool) -> bool:
        """Set up the engine's token loop after :meth:`start` (and warm it up); False if it has none."""
        self._loop = await self._run(self.engine.decode_loop)
        if self._loop is not None and warmup:
            started = time.perf_counter()
            await self._run(self._loop.warmup)
            log.info(
                "engine %s's decode loop warmed up in %.2fs", self.engine.name, time.perf_counter() - started
            )
        return self._loop is not None

    async def step(
        self, admit: list[tuple[int, Job]], drop: list[int], wake: threading.Event
    ) -> tuple[dict[int, np.ndarray | int | TTSError], int]:
        """The continuous batcher's consumer: rows ``drop`` leave, rows ``admit`` join (their
        prefill), then token steps for every row, on the worker thread -- as many as run
        before a row leaves or ``wake`` is set (the batcher has rows to admit or drop), at most
        :data:`MAX_STEPS_PER_CALL`: one thread hand-off per event, not per token.  Returns the
        rows that left (their audio, a streamed row's sample count, or their error) and the
        number of steps run."""
        return await self._run(self._step_checked, admit, drop, wake)

    def _step_checked(
        self, admit: list[tuple[int, Job]], drop: list[int], wake: threading.Event
    ) -> tuple[dict[int, np.ndarray | int | TTSError], int]:
        loop = self._loop
        assert loop is not None, "start_rows() first"
        left: dict[int, np.ndarray | int | TTSError] = {}
        for row in drop:
            loop.drop(row)
            self._forget(row)
        for row, job in admit:
            stream = job.stream
            eager = (lambda: True) if stream is None else (lambda s=stream, i=job.segment: s.reading(i))
            try:
                loop.admit(row, job.item, stream=stream is not None, eager=eager)
            except Exception as exc:
                left[row] = self._raise_if_broken(exc)
                continue
            self._rows[row] = job
            if stream is not None:
                self._streamed[row] = 0
        steps = 0
        while self._rows and not left and (steps == 0 or not wake.is_set()) and steps < MAX_STEPS_PER_CALL:
            started = time.perf_counter()
            try:
                out = loop.step()
            except Exception as exc:
                error = self._raise_if_broken(exc)
                log.error("the decode loop failed; failing its %d rows: %s", len(self._rows), error)
                for row in list(self._rows):
                    loop.drop(row)
                    left[row] = error
                    self._forget(row)
                return left, steps + 1
            finally:
                if self._metrics is not None:
                    self._metrics.inference_duration.observe(time.perf_counter() - started)
            steps += 1
            left.update(self._deliver(out, loop))
        return left, max(steps, 1)

    def _deliver(self, out: StepOutput, loop: DecodeLoop) -> dict[int, np.ndarray | int | TTSError]:
        """A step's audio to its rows' streams or results; errors to their rows."""
        left: dict[int, np.ndarray | int | TTSError] = {}
        for row, error in out.failed.items():
            left[row] = self._engine_error(error) if isinstance(error, Exception) else EngineError(str(error))
        self._report_truncated([self._rows[row].item for row in out.truncated])
        for row, chunk in [*out.chunks.items(), *out.finished.items()]:
            job = self._rows.get(row)
            if job is None or row in left:
                continue
            checked = self._check(chunk) if chunk.size or job.stream is None else chunk
            if isinstance(checked, TTSError):
                left[row] = checked
            elif job.stream is None:
                left[row] = checked
            elif not checked.size or job.stream.put(checked, job.segment):
                self._streamed[row] += checked.size
                if row in out.finished:
                    left[row] = self._streamed[row]
            else:
                left[row] = _unread(job.stream)
        for row, job in self._rows.items():
            if row not in left and job.stream is not None and not job.stream.wanted:
                left[row] = _unread(job.stream)  # its client went away: the row leaves now
        for row in left:
            if row not in out.finished and row not in out.failed:
                loop.drop(row)  # a malformed chunk, or a stream nobody reads any more
            self._forget(row)
        self._record_device_memory()
        return left

    def _forget(self, row: int) -> None:
        self._rows.pop(row, None)
        self._streamed.pop(row, None)

    def _raise_if_broken(self, exc: Exception) -> TTSError:
        """The error a row gets for ``exc``; a broken device is raised (the engine is done)."""
        error = self._engine_error(exc)
        if isinstance(error, EngineFailed):
            raise error from exc
        return error

    def _observe(self, seconds: float, items: Sequence[SynthesisItem]) -> None:
        if self._metrics is not None:
            self._metrics.inference_duration.observe(seconds)
        self._report_truncated([items[row] for row in self.engine.truncated_rows()])
        self._record_device_memory()

    def _report_truncated(self, items: Sequence[SynthesisItem]) -> None:
        """Segments that ended at their token budget still speaking: logged and counted."""
        for item in items:
            log.warning(
                "a segment of %d characters (%r...) ended at its token budget while the model was "
                "still speaking: its audio stops there (tts_truncated_segments_total)",
                len(item.text),
                item.text[:40],
            )
        if self._metrics is not None:
            self._metrics.truncated_segments.inc(len(items))

    def _record_device_memory(self) -> None:
        memory = self.engine.device_memory()
        if memory is not None and self._metrics is not None:
            self._metrics.device_memory_allocated.set(memory[0])
            self._metrics.device_memory_reserved.set(memory[1])

    def _synthesize_checked(self, items: Sequence[SynthesisItem]) -> list[np.ndarray | TTSError]:
        started = time.perf_counter()
        try:
            arrays = self.engine.synthesize(items)
        except Exception as exc:
            raise self._engine_error(exc) from exc
        finally:
            self._observe(time.perf_counter() - started, items)
        if len(arrays) != len(items):
            # The batcher retries the items one by one after this.
            raise EngineError(f"the engine returned {len(arrays)} results for {len(items)} items")
        return [self._check(array) for array in arrays]

    def _engine_error(self, exc: Exception) -> TTSError:
        """An engine's exception as the error its requests get, classified by the engine."""
        if isinstance(exc, TTSError):
            return exc
        detail = f"{type(exc).__name__}: {exc}"
        kind = self.engine.classify_failure(exc)
        if kind is Failure.DEVICE:
            return EngineFailed(f"the engine's device failed and the engine cannot continue: {detail}")
        if kind is Failure.OUT_OF_MEMORY:
            return OutOfMemory(f"synthesis ran out of memory: {detail}")
        return EngineError(f"synthesis failed: {detail}")

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


def _unread(stream: StreamBuffer) -> TTSError:
    """What a job whose stream nobody reads any more ends with."""
    if stream.overflowed:
        return StreamBufferFull("the stream was cut off: its client read too slowly")
    return ClientDisconnected("the client went away before the stream ended")
