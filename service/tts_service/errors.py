"""The service's domain errors: what went wrong, never how HTTP says it.

The batcher, the worker, engines and the request parser raise these.  Each carries a
stable machine-readable ``code`` that doubles as the ``reason``/``code`` label of the
metrics (``tts_rejected_total``, ``tts_engine_errors_total``, ``tts_streams_aborted_total``)
and as the ``error`` field of log lines, so one name is used everywhere; and, for a
request that was wrong, the ``param`` it was wrong in.

Status codes, ``Retry-After`` and the JSON error body are the API layer's business:
:data:`tts_service.api.HTTP_ERRORS` maps every class here to them in one table (as
KServe's model server does), so nothing below the API knows it is behind HTTP.
"""

from __future__ import annotations


class TTSError(Exception):
    """Base class: an error with a stable machine-readable code."""

    code: str = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(TTSError):
    """The client sent something we cannot accept; ``param`` names the field."""

    code = "invalid_request"


class UnknownVoice(InvalidRequest):
    """The requested voice is none the engine knows (always the request's ``voice``)."""

    code = "unknown_voice"


class InvalidSpeakerEmbedding(InvalidRequest):
    """A speaker embedding in the request does not decode to this model's speaker (always the
    request's ``speaker_embedding``)."""

    code = "invalid_speaker_embedding"


class Unauthorized(TTSError):
    """Authentication is on and the request has no valid bearer token."""

    code = "invalid_api_key"


class NotFound(TTSError):
    code = "not_found"


class MethodNotAllowed(TTSError):
    code = "method_not_allowed"


class PayloadTooLarge(TTSError):
    code = "payload_too_large"


class UnsupportedMediaType(TTSError):
    code = "unsupported_media_type"


class Unavailable(TTSError):
    """Temporarily unable to take the request; the same request may succeed later."""

    code = "unavailable"


class QueueFull(Unavailable):
    code = "queue_full"


class Draining(Unavailable):
    code = "draining"


class NotReady(Unavailable):
    code = "not_ready"


class DeadlineExceeded(TTSError):
    """The request's deadline passed before its audio was ready."""

    code = "deadline_exceeded"


class EngineError(TTSError):
    """The engine failed on this request; other requests are unaffected."""

    code = "engine_error"


class OutOfMemory(EngineError):
    """The engine ran out of (device) memory: the same work may fit in a smaller batch."""

    code = "out_of_memory"


class EngineFailed(EngineError):
    """The engine's device is broken (a CUDA illegal memory access, a device-side assert, a
    lost GPU): nothing more can be computed in this process.  Not the request's fault:
    another replica can serve it, so the API answers it as temporarily unavailable."""

    code = "engine_failed"


class StreamBufferFull(TTSError):
    """A stream's client read so much slower than its audio was made that the audio buffered
    for it reached ``TTS_STREAM_BUFFER_SECONDS``; the stream is cut off."""

    code = "stream_buffer_full"


class ClientDisconnected(TTSError):
    """The client went away before its response was complete (streamed or not)."""

    code = "client_disconnected"
