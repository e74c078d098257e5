"""The running service: engine, worker, batcher and metrics wired together, with state.

:class:`SpeechService` is what the HTTP handlers talk to.  It knows whether the service
is ready (engine loaded and warmed up) or draining, turns a validated
:class:`~tts_service.speech_request.SpeechRequest` into encoded audio, and shuts down
in the right order: stop intake, finish the queue, release the engine.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from . import __version__
from .audio import StreamEncoder, encode
from .auth import Authenticator, load_api_keys
from .batcher import DynamicBatcher
from .engines import Engine, SynthesisItem, create_engine
from .errors import Draining, NotReady
from .metrics import Metrics
from .settings import Settings
from .speech_request import SpeechRequest
from .worker import InferenceWorker

log = logging.getLogger("tts_service")


class State(enum.Enum):
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
    before the first chunk that can still become an ordinary error response.
    """

    voice: str
    chunks: AsyncIterator[bytes]


class SpeechService:
    """Owns the pipeline; one per process (or per test)."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.auth = Authenticator(load_api_keys(settings), settings.auth_probes)
        self.engine = engine if engine is not None else create_engine(settings)
        self.metrics = Metrics(engine=self.engine.name, version=__version__)
        self.worker = InferenceWorker(self.engine, self.metrics)
        self.batcher: DynamicBatcher[SynthesisItem, np.ndarray] = DynamicBatcher(
            self.worker.synthesize,
            max_batch_size=min(settings.max_batch_size, self.engine.max_batch_size),
            max_wait_s=settings.max_wait_ms / 1000.0,
            max_queue_size=settings.max_queue_size,
            default_timeout_s=settings.request_timeout_s,
            # Streamed items run through a different engine call: never in a batch with others.
            key=lambda item: (item.sink is not None, self.engine.batch_key(item)),
            observer=self.metrics,
        )
        self.metrics.track_queue_depth(lambda: self.batcher.queue_depth)
        # Encoding (mp3 especially) must not block the event loop, nor queue behind the engine.
        self._encoder = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tts-encode")
        self.state = State.STARTING
        self.failure: BaseException | None = None
        self._ready = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    async def start(self) -> None:
        """Load and warm up the engine, then start batching; raises if loading fails."""
        try:
            load_seconds, warmup_seconds = await self.worker.start(warmup=self.settings.warmup)
        except BaseException as exc:
            self.state = State.FAILED
            self.failure = exc
            raise
        self.metrics.model_load_seconds.set(load_seconds)
        self.metrics.warmup_seconds.set(warmup_seconds)
        self.batcher.start()
        if self.state is State.STARTING:
            self.state = State.READY
            self.metrics.ready.set(1)
            log.info("ready: engine=%s in %.2fs", self.engine.name, load_seconds + warmup_seconds)
        self._ready.set()

    def voice_names(self) -> list[str]:
        """Every name a request may give as ``voice``: voice ids and aliases."""
        return [v.id for v in self.engine.voices()] + list(self.engine.aliases())

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def synthesize(self, request: SpeechRequest) -> SpeechResult:
        """Queue ``request`` for the engine and encode its audio."""
        self._check_accepting()
        voice = self.engine.resolve_voice(request.voice, request.text)
        item = SynthesisItem(text=request.text, voice=voice, speed=request.speed)
        audio = await self.batcher.infer(item)
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
        queue: asyncio.Queue[np.ndarray] = asyncio.Queue()

        def sink(chunk: np.ndarray) -> None:  # called on the worker thread
            loop.call_soon_threadsafe(queue.put_nowait, chunk)

        item = SynthesisItem(text=request.text, voice=voice, speed=request.speed, sink=sink)
        entry = self.batcher.submit(item)  # a full queue is reported here, before any response
        task = loop.create_task(self.batcher.result(entry))
        encoder = StreamEncoder(request.response_format, self.engine.sample_rate)

        async def chunks() -> AsyncIterator[bytes]:
            first = True
            try:
                while True:
                    getter = loop.create_task(queue.get())
                    await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                    finished = not getter.done()  # the batch ended and no chunk is waiting
                    if finished:
                        getter.cancel()
                        # The worker posted every chunk before the batch's result: drain them.
                        pending = [queue.get_nowait() for _ in range(queue.qsize())]
                    else:
                        pending = [getter.result()]
                    for chunk in pending:
                        if first:
                            self.metrics.time_to_first_audio.observe(time.perf_counter() - arrived)
                            first = False
                        yield await loop.run_in_executor(self._encoder, encoder.encode, chunk)
                    if finished:
                        task.result()  # raises the request's error
                        yield encoder.finish()
                        return
            finally:
                if not task.done():
                    task.cancel()

        return SpeechStream(voice.id, chunks())

    def _check_accepting(self) -> None:
        if self.state in (State.DRAINING, State.STOPPED):
            raise Draining("the service is shutting down and takes no new requests")
        if self.state is not State.READY:
            raise NotReady(f"the service is {self.state.value}, not ready yet", retry_after_s=5)

    async def drain(self) -> None:
        """Stop taking requests and finish the queued and in-flight ones (bounded in time)."""
        if self.state in (State.DRAINING, State.STOPPED):
            return
        was_running = self.state is State.READY
        self.state = State.DRAINING
        self.metrics.ready.set(0)
        if was_running:
            log.info("draining: %d queued, %d in flight", self.batcher.queue_depth, self.batcher.in_flight)
        await self.batcher.close(self.settings.shutdown_timeout_s)

    async def close(self) -> None:
        """Drain, then release the engine and the threads."""
        await self.drain()
        if self.state is State.STOPPED:
            return
        self.state = State.STOPPED
        self.engine.interrupt()  # a generation still running after the drain timeout stops early
        try:
            await self.worker.close()
        finally:
            self._encoder.shutdown(wait=True)
        log.info("stopped")
