"""The running service: engine, worker, batcher and metrics wired together, with state.

:class:`SpeechService` is what the HTTP handlers talk to.  It knows whether the service
is ready (engine loaded and warmed up), draining, or failed (the engine's device broke:
see :mod:`.engines.failures`), turns a validated
:class:`~tts_service.speech_request.SpeechRequest` into encoded audio, and shuts down
in the right order: stop intake, finish the queue, release the engine.
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
from .batcher import DynamicBatcher
from .engines import Engine, SynthesisItem, create_engine
from .errors import Draining, EngineFailed, NotReady
from .metrics import Metrics
from .settings import Settings
from .speech_request import SpeechRequest
from .stream_buffer import StreamBuffer
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


class SpeechService:
    """Owns the pipeline; one per process (or per test)."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.auth = Authenticator(load_api_keys(settings), settings.auth_probes)
        self.engine = engine if engine is not None else create_engine(settings)
        self.metrics = Metrics(engine=self.engine.name, version=__version__)
        self.worker = InferenceWorker(self.engine, self.metrics)
        self.batcher: DynamicBatcher[Job, np.ndarray | int] = DynamicBatcher(
            self.worker.synthesize,
            max_batch_size=min(settings.max_batch_size, self.engine.max_batch_size),
            max_wait_s=settings.max_wait_ms / 1000.0,
            max_queue_size=settings.max_queue_size,
            default_timeout_s=settings.request_timeout_s,
            # Streamed jobs run through a different engine call: never in a batch with others.
            key=lambda job: (job.stream is not None, self.engine.batch_key(job.item)),
            observer=self.metrics,
            on_engine_failed=self._engine_failed,
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
            load_seconds, warmup_seconds = await self.worker.start(warmup=self.settings.warmup)
        except BaseException as exc:
            self.state = ServiceState.FAILED
            self.failure = exc
            raise
        self.metrics.model_load_seconds.set(load_seconds)
        self.metrics.warmup_seconds.set(warmup_seconds)
        self.batcher.start()
        if self.state is ServiceState.STARTING:
            self.state = ServiceState.READY
            self.metrics.ready.set(1)
            log.info("ready: engine=%s in %.2fs", self.engine.name, load_seconds + warmup_seconds)

    def voice_names(self) -> list[str]:
        """Every name a request may give as ``voice``: voice ids and aliases."""
        return [v.id for v in self.engine.voices()] + list(self.engine.aliases())

    async def synthesize(self, request: SpeechRequest) -> SpeechResult:
        """Queue ``request`` for the engine and encode its audio."""
        self._check_accepting()
        voice = self.engine.resolve_voice(request.voice, request.text)
        job = Job(SynthesisItem(text=request.text, voice=voice, speed=request.speed))
        audio = await self.batcher.infer(job)
        body = await asyncio.get_running_loop().run_in_executor(
            self._encoder, encode, audio, self.engine.sample_rate, request.response_format
        )
        return SpeechResult(body, request.response_format, voice.id, audio.size / self.engine.sample_rate)

    async def stream(self, request: SpeechRequest) -> SpeechStream:
        """Queue ``request`` as a streamed synthesis; its audio arrives chunk by chunk."""
        arrived = time.perf_counter()
        self._check_accepting()
        voice = self.engine.resolve_voice(request.voice, request.text)
        loop = asyncio.get_running_loop()
        rate = self.engine.sample_rate
        buffer = StreamBuffer(loop, max_samples=round(self.settings.stream_buffer_s * rate), sample_rate=rate)
        job = Job(SynthesisItem(text=request.text, voice=voice, speed=request.speed), stream=buffer)
        entry = self.batcher.submit(job)  # a full queue is reported here, before any response
        result = loop.create_task(self.batcher.result(entry))

        def finished(task: asyncio.Task) -> None:
            buffer.end()  # the worker put every chunk into the buffer before the result was set
            if not task.cancelled():
                task.exception()  # retrieved: chunks() re-raises it when the reader is still there

        result.add_done_callback(finished)
        encoder = StreamEncoder(request.response_format, rate)

        async def chunks() -> AsyncGenerator[bytes, None]:
            try:
                first = True
                while (chunk := await buffer.get()) is not None:
                    if first:
                        self.metrics.time_to_first_audio.observe(time.perf_counter() - arrived)
                        first = False
                    yield await loop.run_in_executor(self._encoder, encoder.encode, chunk)
                await result  # raises the request's error
                yield encoder.finish()
            finally:
                # Closed early (the client went away, or the stream failed): leave the queue, or
                # tell the engine nobody listens, and free what was buffered.
                buffer.close()
                self.batcher.cancel(entry)  # also when its result task never got to run
                if not result.done():
                    result.cancel()

        return SpeechStream(voice.id, chunks(), buffer)

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
