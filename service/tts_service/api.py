"""HTTP API: every route registered in one place, every error mapped to HTTP in one place.

Routes are listed in :data:`ROUTES`.  The layers below raise plain domain errors
(:mod:`tts_service.errors`); :data:`HTTP_ERRORS` says what each one is in HTTP -- status,
OpenAI error type, ``Retry-After``, extra headers -- and :func:`error_middleware` is the
only code that turns exceptions into responses.  aiohttp's own HTTP exceptions (404, 405,
413) are rewritten into the same JSON shape; anything unexpected is logged and becomes a
JSON 500 without taking the service down.  :func:`metrics_middleware` counts and times
every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import playground_page
from .audio import CONTENT_TYPES
from .errors import (
    ClientDisconnected,
    DeadlineExceeded,
    Draining,
    EngineError,
    EngineFailed,
    InvalidRequest,
    InvalidSpeakerEmbedding,
    MethodNotAllowed,
    NotFound,
    NotReady,
    PayloadTooLarge,
    QueueFull,
    StreamBufferFull,
    TTSError,
    Unauthorized,
    Unavailable,
    UnknownVoice,
    UnsupportedMediaType,
)
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .openapi import build_openapi
from .settings import Settings
from .speech_request import SpeechRequest, decode_json_object, parse_openai_speech, parse_tts
from .speech_service import SpeechService
from .sse import SpeechEvents

log = logging.getLogger("tts_service.api")

SERVICE: web.AppKey[SpeechService] = web.AppKey("service", SpeechService)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SYNTHESIS_ROUTES = ("/v1/audio/speech", "/tts")


@dataclass(frozen=True)
class HttpError:
    """What a domain error is in HTTP."""

    status: int
    type: str = "invalid_request_error"  # OpenAI's error "type" field
    retry_after_s: int | None = None  # a Retry-After header: the client may try again then
    param: str | None = None  # the request field, for errors that always concern one
    headers: dict[str, str] = field(default_factory=dict)


# The one table from domain errors to HTTP.  An error is looked up by its class, then by its
# base classes in order, so a subclass without a row of its own answers like its parent.
HTTP_ERRORS: dict[type[TTSError], HttpError] = {
    InvalidRequest: HttpError(400),
    UnknownVoice: HttpError(400, param="voice"),
    InvalidSpeakerEmbedding: HttpError(400, param="speaker_embedding"),
    Unauthorized: HttpError(401, headers={"WWW-Authenticate": 'Bearer realm="kubetts"'}),
    NotFound: HttpError(404),
    MethodNotAllowed: HttpError(405),
    PayloadTooLarge: HttpError(413),
    UnsupportedMediaType: HttpError(415),
    EngineError: HttpError(500, "server_error"),
    TTSError: HttpError(500, "server_error"),
    Unavailable: HttpError(503, "server_error", retry_after_s=1),
    QueueFull: HttpError(503, "server_error", retry_after_s=1),
    Draining: HttpError(503, "server_error", retry_after_s=1),
    NotReady: HttpError(503, "server_error", retry_after_s=5),
    # The pod is about to be restarted; another replica can take the request now.
    EngineFailed: HttpError(503, "server_error", retry_after_s=5),
    DeadlineExceeded: HttpError(504, "server_error"),
    # Only seen as a status when the service fell behind before a stream's first byte went out.
    StreamBufferFull: HttpError(503, "server_error", retry_after_s=1),
}


class _HttpStatusError(TTSError):
    """One of aiohttp's own HTTP errors without a domain meaning, keeping its status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def http_error(error: TTSError) -> HttpError:
    """How ``error`` is answered over HTTP (see :data:`HTTP_ERRORS`)."""
    if isinstance(error, _HttpStatusError):
        return HttpError(error.status, "invalid_request_error" if error.status < 500 else "server_error")
    for cls in type(error).__mro__:
        if cls in HTTP_ERRORS:
            return HTTP_ERRORS[cls]
    return HTTP_ERRORS[TTSError]


def error_body(error: TTSError, http: HttpError) -> dict[str, Any]:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {
        "error": {
            "message": error.message,
            "type": http.type,
            "param": error.param or http.param,
            "code": error.code,
        }
    }


def error_response(error: TTSError) -> web.Response:
    http = http_error(error)
    headers = dict(http.headers)
    if http.retry_after_s is not None:
        headers["Retry-After"] = str(http.retry_after_s)
    return web.json_response(error_body(error, http), status=http.status, headers=headers)


async def read_json_object(request: web.Request, settings: Settings) -> dict[str, Any]:
    """The request body as a JSON object, or a 4xx error saying what is wrong with it."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got {request.content_type or 'none'!r}"
        )
    if request.content_length is not None and request.content_length > settings.max_body_bytes:
        raise PayloadTooLarge(
            f"the request body is {request.content_length} bytes; "
            f"the limit is {settings.max_body_bytes} bytes"
        )
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(
            f"the request body exceeds the limit of {settings.max_body_bytes} bytes"
        ) from None
    return decode_json_object(raw)


def _service(request: web.Request) -> SpeechService:
    return request.app[SERVICE]


def _audio_headers(service: SpeechService, speech: SpeechRequest, voice: str) -> dict[str, str]:
    """What every audio response says about how it was made (streamed or not)."""
    return {
        "X-TTS-Model": speech.model,
        "X-TTS-Engine": service.engine.name,
        "X-TTS-Voice": voice,
        "X-TTS-Sample-Rate": str(service.engine.sample_rate),
    }


async def _stream_audio(request: web.Request, speech: SpeechRequest) -> web.StreamResponse:
    """A chunked response written as the engine makes the audio: raw audio bytes, or with
    ``stream_format: "sse"`` OpenAI's server-sent events carrying them.

    The first chunk is awaited before anything is sent, so an error up to then is an
    ordinary JSON error response.  An error after audio went out cannot change the status
    any more: the connection is closed without the final chunk, which HTTP clients report
    as an incomplete response rather than mistaking a truncated clip for a whole one.  The
    same happens to a client that reads so slowly that ``TTS_STREAM_BUFFER_S`` of audio
    piles up for it.  However the response ends, the chunk generator is closed at once,
    which frees the stream's place in the queue or the batch and its buffered audio.

    Server-sent events end the same way, with one difference: an engine failure or a passed
    deadline after the first event is sent as an ``error`` event (OpenAI's error object)
    before the stream ends, since an event stream has no other way to say it.  A client cut
    off for reading too slowly gets no event (it is not reading); its connection is closed.
    """
    service = _service(request)
    stream = await service.stream(speech)
    sse = SpeechEvents(len(speech.text), service.engine.sample_rate) if speech.sse else None
    async with contextlib.aclosing(stream.chunks) as chunks:
        first = await anext(chunks)
        response = web.StreamResponse(
            headers={
                "Content-Type": sse.content_type if sse else CONTENT_TYPES[speech.response_format],
                **({"Cache-Control": "no-cache"} if sse else {}),
                **_audio_headers(service, speech, stream.voice),
            }
        )
        response.enable_chunked_encoding()
        # Set when the stream is cut off: a write waiting for a slow client gives up at once.
        cut = asyncio.get_running_loop().create_future()
        stream.buffer.on_overflow(lambda: cut.done() or cut.set_result(None))
        try:
            await response.prepare(request)
            frame = sse.chunk if sse else bytes
            if first:
                await _write_unless_cut(response, frame(first), cut, stream)
            async for data in chunks:
                if data:
                    await _write_unless_cut(response, frame(data), cut, stream)
            if sse:
                await _write_unless_cut(response, sse.done(stream.samples), cut, stream)
            await response.write_eof()
        except TTSError as error:  # the engine failed, the deadline passed, or the buffer filled
            log.warning(
                "%s %s: stream ended early: %s %s", request.method, request.path, error.code, error.message
            )
            if not (sse and await _end_with_error_event(response, sse, error)):
                _abort_connection(request)
            raise _ResponseAborted(response, error) from error
        except ConnectionError as exc:  # the client went away (seen when writing to it)
            raise _ResponseAborted(response, ClientDisconnected(f"the client went away: {exc}")) from exc
        except asyncio.CancelledError:  # aiohttp cancelled the handler: the client went away
            if response.prepared:
                service.metrics.streams_aborted.labels(reason=ClientDisconnected.code).inc()
            raise
    return response


SSE_ERROR_WRITE_S = 5.0


async def _end_with_error_event(response: web.StreamResponse, sse: SpeechEvents, error: TTSError) -> bool:
    """End an event stream with an ``error`` event; False when that cannot be done (a client
    cut off for reading too slowly, or gone)."""
    if isinstance(error, StreamBufferFull):
        return False
    try:
        async with asyncio.timeout(SSE_ERROR_WRITE_S):  # a client that stopped reading gets no wait
            await response.write(sse.error(error_body(error, http_error(error))))
            await response.write_eof()
    except (ConnectionError, TimeoutError):
        return False
    return True


async def _write_unless_cut(response: web.StreamResponse, data: bytes, cut: asyncio.Future, stream) -> None:
    """Write ``data``, unless the stream is cut off first (the write may wait on a slow client)."""
    if not cut.done():
        write = asyncio.ensure_future(response.write(data))
        await asyncio.wait({write, cut}, return_when=asyncio.FIRST_COMPLETED)
        if write.done():
            write.result()  # raises a ConnectionError if the client went away
            return
        write.cancel()
    raise stream.buffer.overflow_error()


def _abort_connection(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


class _ResponseAborted(Exception):
    """A response that failed after its status line went out; the connection was closed."""

    def __init__(self, response: web.StreamResponse, error: TTSError) -> None:
        super().__init__(error.message)
        self.response = response
        self.error = error


async def _respond_with_audio(request: web.Request, speech: SpeechRequest) -> web.StreamResponse:
    if speech.stream:
        return await _stream_audio(request, speech)
    service = _service(request)
    result = await service.synthesize(speech)
    return web.Response(
        body=result.body,
        content_type=CONTENT_TYPES[result.response_format],
        headers={
            **_audio_headers(service, speech, result.voice),
            "X-TTS-Audio-Seconds": f"{result.audio_seconds:.3f}",
        },
    )


async def openai_speech(request: web.Request) -> web.Response:
    """``POST /v1/audio/speech``: OpenAI's text-to-speech endpoint."""
    service = _service(request)
    body = await read_json_object(request, service.settings)
    speech = parse_openai_speech(body, service.settings, service.request_rules)
    return await _respond_with_audio(request, speech)


async def tts(request: web.Request) -> web.Response:
    """``POST /tts``: ``{"text", "voice", "format", "speed"}`` -> audio (wav by default)."""
    service = _service(request)
    body = await read_json_object(request, service.settings)
    return await _respond_with_audio(request, parse_tts(body, service.settings, service.request_rules))


async def list_voices(request: web.Request) -> web.Response:
    """``GET /v1/voices``: voices that can be named, aliases, the default, and every form a
    request may name a voice in."""
    service = _service(request)
    return web.json_response(
        {
            "engine": service.engine.name,
            "default": service.settings.default_voice or None,
            "voices": [
                {"id": v.id, "language": v.language, "description": v.description}
                for v in service.engine.voices()
            ],
            "aliases": service.engine.aliases(),
            "forms": service.engine.voice_forms(),
        }
    )


async def list_models(request: web.Request) -> web.Response:
    """``GET /v1/models``: OpenAI's model list; any model name is accepted by /v1/audio/speech."""
    engine = _service(request).engine.name
    return web.json_response(
        {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": f"kubetts-{engine}"}
                for name in ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", engine)
            ],
        }
    )


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: the process is alive and its event loop answers, and its engine has not
    failed for good (a broken GPU: 503, so the liveness probe restarts the pod)."""
    service = _service(request)
    if not service.healthy:
        error = service.failure
        return web.json_response(
            {
                "status": "failed",
                "engine": service.engine.name,
                "error": getattr(error, "message", str(error)),
            },
            status=503,
        )
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """``GET /readyz``: 200 once the engine is loaded and warmed up; 503 before and while draining."""
    service = _service(request)
    body = {"status": service.state.value, "engine": service.engine.name}
    return web.json_response(body, status=200 if service.ready else 503)


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text format."""
    body = _service(request).metrics.render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = METRICS_CONTENT_TYPE
    return response


async def playground(request: web.Request) -> web.Response:
    """``GET /``: the playground page (:mod:`tts_service.playground_page`); 404 when turned off."""
    return _playground_file(request, playground_page.PAGE, "text/html; charset=utf-8")


async def playground_asset(request: web.Request) -> web.Response:
    """``GET /playground/{name}``: the page's script and style sheet."""
    name = request.match_info["name"]
    if name not in playground_page.ASSETS:
        raise NotFound(f"no playground file {name!r}; the page has: {', '.join(playground_page.ASSETS)}")
    return _playground_file(request, name, playground_page.ASSETS[name])


def _playground_file(request: web.Request, name: str, content_type: str) -> web.Response:
    if not _service(request).settings.playground:
        raise NotFound("the playground page is turned off here (TTS_PLAYGROUND=false)")
    return web.Response(
        body=playground_page.read(name),
        headers={
            "Content-Type": content_type,
            "Content-Security-Policy": playground_page.CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache",
        },
    )


async def openapi(request: web.Request) -> web.Response:
    """``GET /openapi.json``: the OpenAPI 3 description of this API (with this service's limits)."""
    service = _service(request)
    return web.json_response(build_openapi(service.settings, service.voice_names(), service.request_rules))


ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("POST", "/v1/audio/speech", openai_speech),
    ("POST", "/tts", tts),
    ("GET", "/v1/voices", list_voices),
    ("GET", "/v1/models", list_models),
    ("GET", "/healthz", healthz),
    ("GET", "/readyz", readyz),
    ("GET", "/metrics", metrics),
    ("GET", "/openapi.json", openapi),
    ("GET", "/", playground),
    ("GET", "/playground/{name}", playground_asset),
)


def _as_tts_error(exc: web.HTTPException) -> TTSError:
    if exc.status == 404:
        return NotFound(f"no route for this path; available routes: {', '.join(p for _, p, _ in ROUTES)}")
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return MethodNotAllowed(f"method not allowed here; allowed: {allowed}")
    if exc.status == 413:
        return PayloadTooLarge("the request body is too large")
    if exc.status == 415:
        return UnsupportedMediaType(exc.text or "unsupported media type")
    return _HttpStatusError(exc.reason, exc.status)


# Set on a response whose status line went out but whose body did not complete.
OUTCOME: web.ResponseKey[str] = web.ResponseKey("tts_outcome", str)
ABORTED = "aborted"  # the server cut the response off (stream failure, deadline, slow client)
DISCONNECTED = "disconnected"  # the client went away before the response was complete


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place exceptions become HTTP responses."""
    try:
        return await handler(request)
    except _ResponseAborted as aborted:  # the status line was already 200: count, don't answer
        service = request.app[SERVICE]
        service.metrics.streams_aborted.labels(reason=aborted.error.code).inc()
        if not isinstance(aborted.error, (ClientDisconnected, StreamBufferFull)):
            _count_failure(service, aborted.error)
        disconnected = isinstance(aborted.error, ClientDisconnected)
        aborted.response[OUTCOME] = DISCONNECTED if disconnected else ABORTED
        return aborted.response
    except TTSError as error:
        failure = error
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        failure = _as_tts_error(exc)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        failure = TTSError("internal server error; the service logged the details")
    _count_failure(request.app[SERVICE], failure)
    response = error_response(failure)
    if response.status >= 500:
        log.warning(
            "%s %s -> %d %s: %s", request.method, request.path, response.status, failure.code, failure.message
        )
    return response


def _count_failure(service: SpeechService, failure: TTSError) -> None:
    if isinstance(failure, EngineError):
        service.metrics.engine_errors.labels(code=failure.code).inc()
    elif isinstance(failure, (Unavailable, DeadlineExceeded)) or 400 <= http_error(failure).status < 500:
        service.metrics.rejected.labels(reason=failure.code).inc()


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer-token check (a no-op unless keys are configured); runs inside the error mapping."""
    request.app[SERVICE].auth.check(request.path, request.headers.get("Authorization"))
    return await handler(request)


def _route_label(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count, time and classify every request (runs outside the error middleware).

    Every request is counted once in ``tts_requests_total``: by status code when its
    response completed, as ``aborted`` or ``disconnected`` when it did not (see
    :data:`OUTCOME`); the latency histogram holds complete responses only.
    """
    service = _service(request)
    route = _route_label(request)
    synthesis = route in SYNTHESIS_ROUTES
    started = time.perf_counter()
    if synthesis:
        service.metrics.inflight.inc()
    try:
        response = await handler(request)
    except asyncio.CancelledError:  # aiohttp cancels the handler of a client that went away
        service.metrics.requests.labels(route=route, code=DISCONNECTED).inc()
        raise
    finally:
        if synthesis:
            service.metrics.inflight.dec()
    outcome = response.get(OUTCOME)
    service.metrics.requests.labels(route=route, code=outcome or str(response.status)).inc()
    if outcome is None:
        elapsed = time.perf_counter() - started
        service.metrics.request_duration.labels(route=route).observe(elapsed)
        if synthesis and response.status == 200 and isinstance(response, web.Response):  # whole, not streamed
            service.metrics.synthesis_duration.labels(route=route).observe(elapsed)
    return response


def build_app(service: SpeechService) -> web.Application:
    """The aiohttp application serving ``service`` (lifecycle hooks are added by app.py)."""
    app = web.Application(
        middlewares=[metrics_middleware, error_middleware, auth_middleware],
        client_max_size=service.settings.max_body_bytes,
    )
    app[SERVICE] = service
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    return app
