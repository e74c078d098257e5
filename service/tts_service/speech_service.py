"""The running service: engine, worker, batcher and metrics wired together, with state.

:class:`SpeechService` is what the HTTP handlers talk to.  It knows whether the service
is ready (engine loaded and warmed up), draining, or failed (the engine's device broke:
see :mod:`.engines.failures`), turns a validated
:class:`~tts_service.speech_request.SpeechRequest` into encoded audio, and shuts down
in the right order: stop intake, finish the queue, release the engine.

A request's text is split into segments (:mod:`.segmentation`), one batcher item each,
all with the request's voice and speed (one voice for the whole text: its language is
detected on the whole text, and every segment shares its batch key, so its speaker
embedding and sampling settings).  The segments' audio is joined by
:mod:`.segment_join`, the same way whole or streamed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from . import __version__
from .audio import StreamEncoder, encode
from .auth import Authenticator, load_api_keys
from .batch_intake import BatchIntake
from .batch_queue import Entry
from .batcher import DynamicBatcher
from .continuous_batcher import ContinuousBatcher
from .engines import Engine, ResolvedVoice, SynthesisItem, create_engine
from .errors import Draining, EngineFailed, NotReady
from .metrics import Metrics
from .segment_join import SegmentJoiner, join_segments
from .segmentation import Segment, split_segments
from .settings import Settings
from .speech_request import SpeechRequest
from .stream_buffer import StreamBuffer
from .text_normalization import clean_text
from .worker import InferenceWorker, Job

log = logging.getLogger("tts_service")


class ServiceState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass(frozen=True)
class SpeechResult:
    """Encoded audio and what produced it, for the response headers."""

    body: bytes
    response_format: str
    voice: str
    audio_seconds: float


@dataclass
class SpeechStream:
    """A streamed synthesis: the voice used, and the encoded chunks as they are made.

    Iterating ``chunks`` raises the request's error (a :class:`TTSError`) if it fails;
    before the first chunk that can still become an ordinary error response.  Close
    ``chunks`` (``contextlib.aclosing``) when the client goes away: that drops the request
    from the queue, or tells the engine nobody listens, and frees its buffered audio.
    """

    voice: str
    chunks: AsyncGenerator[bytes, None]
    buffer: StreamBuffer
    samples: int = 0  # audio samples handed out so far (joins' pauses included)


class SpeechService:
    """Owns the pipeline; one per process (or per test)."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.auth = Authenticator(load_api_keys(settings), settings.auth_probes)
        self.engine = engine if engine is not None else create_engine(settings)
        self.request_rules = self.engine.request_rules()  # what requests may carry (fixed by settings)
        # Continuous batching needs an engine with a token loop; the others batch per request.
        self.scheduler = (
            "continuous" if settings.scheduler == "continuous" and self.engine.has_decode_loop else "request"
        )
        self.metrics = Metrics(engine=self.engine.name, version=__version__, scheduler=self.scheduler)
        self.worker = InferenceWorker(self.engine, self.metrics)
        intake = dict(
            max_batch_size=min(settings.max_batch_size, self.engine.max_batch_size),
            max_queue_size=settings.max_queue_size,
            default_timeout_s=settings.request_timeout_s,
            # Streamed jobs run through a different engine call: never in a batch with others.
            key=lambda job: (job.stream is not None, self.engine.batch_key(job.item)),
            eligible=lambda job: job.admitted,
            cost=lambda job: self.engine.cost(job.item),
            observer=self.metrics,
            on_engine_failed=self._engine_failed,
        )
        self.batcher: BatchIntake[Job, np.ndarray | int]
        if self.scheduler == "continuous":
            self.batcher = ContinuousBatcher(self.worker.step, on_step=self.metrics.step_taken, **intake)
        else:
            self.batcher = DynamicBatcher(
                self.worker.synthesize, max_wait_s=settings.max_wait_ms / 1000.0, **intake
            )
        self.metrics.track_queue_depth(lambda: self.batcher.queue_depth)
        # Encoding (mp3 especially) must not block the event loop, nor queue behind the engine.
        self._encoder = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tts-encode")
        self.state = ServiceState.STARTING
        self.failure: BaseException | None = None  # why the service is FAILED

    @property
    def ready(self) -> bool:
        return self.state is ServiceState.READY

    @property
    def healthy(self) -> bool:
        """False once the engine failed for good (also while draining after that): the
        process should be restarted."""
        return self.failure is None

    def _engine_failed(self, error: EngineFailed) -> None:
        """The batcher's hook: the engine's device broke; stop taking requests for good."""
        if self.state in (ServiceState.STARTING, ServiceState.READY):
            self.state = ServiceState.FAILED
        self.failure = error
        self.metrics.ready.set(0)
        log.error(
            "engine %s failed; /readyz and /healthz now answer 503: %s", self.engine.name, error.message
        )

    async def start(self) -> None:
        """Load and warm up the engine, then start batching; raises if loading fails."""
        try:
            # Requests go through one path only: the token loop (continuous) or whole engine
            # calls (request), so only that path is warmed up.
            continuous = self.scheduler == "continuous"
            load_seconds, warmup_seconds = await self.worker.start(
                warmup=self.settings.warmup and not continuous
            )
            if continuous:  # setting the token loop up belongs to the load, its warmup to the warmup
                started = time.perf_counter()
                await self.worker.start_rows(warmup=self.settings.warmup)
                if self.settings.warmup:
                    warmup_seconds += time.perf_counter() - started
                else:
                    load_seconds += time.perf_counter() - started
        except BaseException as exc:
            self.state = ServiceState.FAILED
            self.failure = exc
            raise
        self.metrics.model_load_seconds.set(load_seconds)
        self.metrics.warmup_seconds.set(warmup_seconds)
        for phase, seconds in self.engine.startup_phases().items():
            self.metrics.startup_phase_seconds.labels(phase).set(seconds)
        if self.scheduler == "request" and self.settings.scheduler == "continuous":
            log.info(
                "the %s engine has no token loop: requests are batched per engine call", self.engine.name
            )
        self.batcher.start()
        if self.state is ServiceState.STARTING:
            self.state = ServiceState.READY
            self.metrics.ready.set(1)
            log.info(
                "ready: engine=%s scheduler=%s in %.2fs",
                self.engine.name,
                self.scheduler,
                load_seconds + warmup_seconds,
            )

    def voice_names(self) -> list[str]:
        """Every name a request may give as ``voice``: voice ids and aliases."""
        return [v.id for v in self.engine.voices()] + list(self.engine.aliases())

    def _segments(self, request: SpeechRequest) -> tuple[ResolvedVoice, list[Segment], float]:
        """The request's voice, its text's segments, and its deadline in seconds."""
        if request.speaker_embedding is not None:
            voice = self.engine.speaker_voice(request.speaker_embedding, request.text)
        else:
            voice = self.engine.resolve_voice(request.voice, request.text)
        segments = split_segments(clean_text(request.text), self.settings.segment_chars)
        return voice, segments, self.settings.request_timeout_s * len(segments)

    def _submit(
        self,
        request: SpeechRequest,
        voice: ResolvedVoice,
        segments: list[Segment],
        timeout: float,
        stream: StreamBuffer | None = None,
    ) -> list[Entry[Job, np.ndarray | int]]:
        """Queue one job per segment, all with the request's voice, speed and sampling controls
        (raises QueueFull and the like at once, before any response)."""
        jobs = [
            Job(SynthesisItem(s.text, voice, request.speed, request.options), stream=stream, segment=i)
            for i, s in enumerate(segments)
        ]
        entries = self.batcher.submit_all(jobs, timeout)
        self.metrics.request_segments.observe(len(segments))
        return entries

    async def synthesize(self, request: SpeechRequest) -> SpeechResult:
        """Queue ``request``'s segments for the engine, join and encode their audio."""
        self._check_accepting()
        voice, segments, timeout = self._segments(request)
        entries = self._submit(request, voice, segments, timeout)
        audios = await self.batcher.results(entries)
        rate = self.engine.sample_rate
        audio = join_segments(audios, [s.boundary for s in segments], rate)
        body = await asyncio.get_running_loop().run_in_executor(
            self._encoder, encode, audio, rate, request.response_format
        )
        return SpeechResult(body, request.response_format, voice.id, audio.size / rate)

    async def stream(self, request: SpeechRequest) -> SpeechStream:
        """Queue ``request``'s segments as a streamed synthesis; its audio arrives chunk by
        chunk in segment order (the first segment streams while the next ones are made)."""
        arrived = time.perf_counter()
        self._check_accepting()
        voice, segments, timeout = self._segments(request)
        loop = asyncio.get_running_loop()
        rate = self.engine.sample_rate
        buffer = StreamBuffer(
            loop,
            max_samples=round(self.settings.stream_buffer_s * rate),
            sample_rate=rate,
            segments=len(segments),
            on_read=self.batcher.poke,
        )
        entries = self._submit(request, voice, segments, timeout, stream=buffer)
        for i, entry in enumerate(entries):
            entry.future.add_done_callback(lambda future, i=i: _segment_done(buffer, i, future))
        result = loop.create_task(self.batcher.results(entries))

        def finished(task: asyncio.Task) -> None:
            buffer.end()  # the worker put every chunk into the buffer before the result was set
            if not task.cancelled():
                task.exception()  # retrieved: chunks() re-raises it when the reader is still there

        result.add_done_callback(finished)
        encoder = StreamEncoder(request.response_format, rate)
        joiner = SegmentJoiner([s.boundary for s in segments], rate)

        async def chunks() -> AsyncGenerator[bytes, None]:
            try:
                first = True
                while (piece := await buffer.get()) is not None:
                    audio = joiner.feed(piece.segment, piece.audio, piece.last)
                    if not audio.size:
                        continue
                    speech_stream.samples += audio.size
                    if first:
                        self.metrics.time_to_first_audio.observe(time.perf_counter() - arrived)
                        first = False
                    yield await loop.run_in_executor(self._encoder, encoder.encode, audio)
                await result  # raises the request's error
                yield encoder.finish()
            finally:
                # Closed early (the client went away, or the stream failed): leave the queue, or
                # tell the engine nobody listens, and free what was buffered.
                buffer.close()
                self.batcher.cancel_all(entries)  # also when its result task never got to run
                if not result.done():
                    result.cancel()

        speech_stream = SpeechStream(voice.id, chunks(), buffer)
        return speech_stream

    def _check_accepting(self) -> None:
        if self.state in (ServiceState.DRAINING, ServiceState.STOPPED):
            raise Draining("the service is shutting down and takes no new requests")
        if self.state is ServiceState.FAILED:
            raise NotReady(f"this replica's engine failed and it awaits a restart ({self.failure}); retry")
        if self.state is not ServiceState.READY:
            raise NotReady(f"the service is {self.state.value}, not ready yet")

    async def drain(self) -> None:
        """Stop taking requests and finish the queued and in-flight ones (bounded in time)."""
        if self.state in (ServiceState.DRAINING, ServiceState.STOPPED):
            return
        was_running = self.state is ServiceState.READY
        self.state = ServiceState.DRAINING
        self.metrics.ready.set(0)
        if was_running:
            log.info("draining: %d queued, %d in flight", self.batcher.queue_depth, self.batcher.in_flight)
        await self.batcher.close(self.settings.shutdown_timeout_s)

    async def close(self) -> None:
        """Drain, then release the engine and the threads."""
        await self.drain()
        if self.state is ServiceState.STOPPED:
            return
        self.state = ServiceState.STOPPED
        self.engine.interrupt()  # a generation still running after the drain timeout stops early
        try:
            await self.worker.close()
        finally:
            self._encoder.shutdown(wait=True)
        log.info("stopped")


def _segment_done(buffer: StreamBuffer, segment: int, future: asyncio.Future) -> None:
    """A streamed segment's job finished: its chunks are all in, or the stream ends."""
    if future.cancelled():
        return
    if future.exception() is not None:
        buffer.end()  # the request fails: its reader stops here and gets the error
    else:
        buffer.end_segment(segment)
