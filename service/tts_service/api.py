"""HTTP API: every route registered in one place, every error mapped to HTTP in one place.

Routes are listed in :data:`ROUTES`.  :func:`error_middleware` is the only code that
turns exceptions into responses: :class:`~tts_service.errors.TTSError` subclasses carry
their status and code; aiohttp's own HTTP exceptions (404, 405, 413) are rewritten into
the same JSON shape; anything unexpected is logged and becomes a JSON 500 without
taking the service down.  :func:`metrics_middleware` counts and times every request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from .audio import CONTENT_TYPES
from .errors import (
    DeadlineExceeded,
    EngineError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    TTSError,
    Unavailable,
    UnsupportedMediaType,
)
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .openapi import build_openapi
from .speech_request import SpeechRequest, parse_openai_speech, parse_tts, read_json_object
from .speech_service import SpeechService

log = logging.getLogger("tts_service.api")

SERVICE: web.AppKey[SpeechService] = web.AppKey("service", SpeechService)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SYNTHESIS_ROUTES = ("/v1/audio/speech", "/tts")


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
    """A chunked response written as the engine makes the audio.

    The first chunk is awaited before anything is sent, so an error up to then is an
    ordinary JSON error response.  An error after audio went out cannot change the status
    any more: the connection is closed without the final chunk, which HTTP clients report
    as an incomplete response rather than mistaking a truncated clip for a whole one.
    """
    service = _service(request)
    stream = await service.stream(speech)
    first = await anext(stream.chunks)
    response = web.StreamResponse(
        headers={
            "Content-Type": CONTENT_TYPES[speech.response_format],
            **_audio_headers(service, speech, stream.voice),
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(first)
    try:
        async for data in stream.chunks:
            if data:
                await response.write(data)
    except TTSError as exc:
        log.warning("%s %s: stream ended early: %s %s", request.method, request.path, exc.code, exc.message)
        if request.transport is not None:
            request.transport.abort()
        raise StreamAborted(response, exc) from exc
    await response.write_eof()
    return response


class StreamAborted(Exception):
    """A streamed response failed after it started; the connection was closed."""

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
    settings = _service(request).settings
    body = await read_json_object(request, settings)
    return await _respond_with_audio(request, parse_openai_speech(body, settings))


async def tts(request: web.Request) -> web.Response:
    """``POST /tts``: ``{"text", "voice", "format", "speed"}`` -> audio (wav by default)."""
    settings = _service(request).settings
    body = await read_json_object(request, settings)
    return await _respond_with_audio(request, parse_tts(body, settings))


async def list_voices(request: web.Request) -> web.Response:
    """``GET /v1/voices``: voices that can be named, aliases, and the default."""
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
    """``GET /healthz``: the process is alive and its event loop answers."""
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


async def openapi(request: web.Request) -> web.Response:
    """``GET /openapi.json``: the OpenAPI 3 description of this API (with this service's limits)."""
    service = _service(request)
    return web.json_response(build_openapi(service.settings, service.voice_names()))


ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("POST", "/v1/audio/speech", openai_speech),
    ("POST", "/tts", tts),
    ("GET", "/v1/voices", list_voices),
    ("GET", "/v1/models", list_models),
    ("GET", "/healthz", healthz),
    ("GET", "/readyz", readyz),
    ("GET", "/metrics", metrics),
    ("GET", "/openapi.json", openapi),
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
    error = InvalidRequest(exc.reason) if 400 <= exc.status < 500 else TTSError(exc.reason)
    error.status = exc.status
    return error


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place exceptions become HTTP responses."""
    try:
        return await handler(request)
    except StreamAborted as aborted:
        _count_failure(request.app[SERVICE], aborted.error)  # the status line was already 200
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
    if failure.status >= 500:
        log.warning(
            "%s %s -> %d %s: %s", request.method, request.path, failure.status, failure.code, failure.message
        )
    return web.json_response(failure.to_json(), status=failure.status, headers=failure.headers)


def _count_failure(service: SpeechService, failure: TTSError) -> None:
    if isinstance(failure, EngineError):
        service.metrics.engine_errors.labels(code=failure.code).inc()
    elif isinstance(failure, (Unavailable, DeadlineExceeded)) or 400 <= failure.status < 500:
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
    """Count, time and classify every request (runs outside the error middleware)."""
    service = _service(request)
    route = _route_label(request)
    synthesis = route in SYNTHESIS_ROUTES
    started = time.perf_counter()
    if synthesis:
        service.metrics.inflight.inc()
    try:
        response = await handler(request)
    finally:
        if synthesis:
            service.metrics.inflight.dec()
    service.metrics.requests.labels(route=route, code=str(response.status)).inc()
    service.metrics.request_duration.labels(route=route).observe(time.perf_counter() - started)
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
