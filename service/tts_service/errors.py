"""Every error the service reports, with its HTTP status, in one place.

Handlers, the batcher, the worker and engines raise these; the API's error middleware
turns any of them into an OpenAI-shaped JSON body
``{"error": {"message", "type", "param", "code"}}`` with ``status``.  ``code`` doubles
as the ``reason`` label of ``tts_rejected_total`` and ``tts_engine_errors_total`` and
as the ``error`` field of log lines, so one name is used everywhere.
"""

from __future__ import annotations


class TTSError(Exception):
    """Base class: an error with an HTTP status and a stable machine-readable code."""

    status: int = 500
    type: str = "server_error"
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})

    def to_json(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(TTSError):
    """The client sent something we cannot accept (400)."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class UnknownVoice(InvalidRequest):
    code = "unknown_voice"


class Unauthorized(TTSError):
    """Authentication is on and the request has no valid bearer token (401)."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="kubetts"'})


class NotFound(TTSError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(TTSError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(TTSError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class UnsupportedMediaType(TTSError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class Unavailable(TTSError):
    """Temporarily unable to take the request; the client should retry (503 + Retry-After)."""

    status = 503
    type = "server_error"
    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 1, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(max(1, retry_after_s))})


class QueueFull(Unavailable):
    code = "queue_full"


class Draining(Unavailable):
    code = "draining"


class NotReady(Unavailable):
    code = "not_ready"


class DeadlineExceeded(TTSError):
    """The request's deadline passed before its audio was ready (504)."""

    status = 504
    type = "server_error"
    code = "deadline_exceeded"


class EngineError(TTSError):
    """The engine failed on this request; other requests are unaffected (500)."""

    status = 500
    type = "server_error"
    code = "engine_error"
