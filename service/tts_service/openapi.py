"""The OpenAPI 3 description of the HTTP API, served at ``GET /openapi.json``.

Built from the same constants the request parser enforces (fields, formats, speed range,
the configured input limit), so the description cannot promise what the parser rejects.
A test keeps its paths equal to the registered routes, and fuzzes every operation with
schemathesis against a real server.
"""

from __future__ import annotations

from typing import Any

from . import __version__, playground_page
from .audio import CONTENT_TYPES, FORMATS, STREAM_FORMATS
from .control_tokens import TOKEN_FORMS, UNKNOWN_TOKEN_PATTERN
from .engines.base import RequestRules
from .settings import Settings
from .speech_request import (
    DEFAULT_MODEL,
    INTEGER_FIELDS,
    MAX_SEED,
    MAX_SPEED,
    MIN_SPEED,
    MODEL_PATTERN,
    SAMPLING_RANGES,
    STREAM_FORMAT_CHOICES,
    engine_fields,
)

ERROR = {"$ref": "#/components/schemas/Error"}


def _error_responses(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "Invalid request: the message says what was wrong and what is allowed",
        401: "Authentication is on and the bearer token is missing or wrong",
        404: "No such route",
        405: "Method not allowed",
        413: "Body larger than TTS_MAX_BODY_BYTES",
        415: "Content-Type is not application/json",
        500: "The engine failed on this request (only this one)",
        503: "Queue full, not ready, or draining; retry after Retry-After seconds",
        504: "The request's deadline (TTS_REQUEST_TIMEOUT_S per segment of its text) passed before its audio was ready",
    }
    return {
        str(s): {"description": reasons[s], "content": {"application/json": {"schema": ERROR}}}
        for s in statuses
    }


# Input must contain something visible: only white space or control characters is a 400.
VISIBLE = "[!-~\u00a1-\u00ac\u00ae-\u00ff\u4e00-\u9fff]"  # \u00ad (soft hyphen) is a format character


def _engine_properties(settings: Settings, rules: RequestRules) -> dict[str, Any]:
    """The fields the engine takes beyond the endpoint's own (ChatTTS: sampling, speaker)."""
    properties: dict[str, Any] = {
        "seed": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_SEED,
            "description": "Sampling seed: the same seed, text and voice served alone give the same audio.",
        }
    }
    for name, (low, high) in SAMPLING_RANGES.items():
        properties[name] = {
            "type": "integer" if name in INTEGER_FIELDS else "number",
            "minimum": low,
            "maximum": high,
            "default": getattr(settings, name),
            "description": f"Sampling {name} for this request (the server's TTS_{name.upper()} by default).",
        }
    properties["speaker_embedding"] = {
        "type": "string",
        "minLength": 1,
        "maxLength": rules.max_embedding_chars,
        "description": "A ChatTTS speaker embedding string (from sample_random_speaker() for this "
        "model), instead of voice; it must decode to the model's speaker size, or the request is a 400.",
    }
    return {name: schema for name, schema in properties.items() if name in rules.fields}


def _instructions(rules: RequestRules) -> dict[str, Any]:
    if rules.instructions is None:
        return {
            "type": "string",
            "maxLength": 0,
            "description": f"Empty or null only: {rules.instructions_help}.",
        }
    return {
        "type": "string",
        "pattern": f"^(?:{rules.instructions})?$",
        "description": f"Empty, or what the engine honours: {rules.instructions_help}.",
    }


def _voice(voices: list[str], rules: RequestRules) -> dict[str, Any]:
    names: list[dict[str, Any]] = [{"type": "string", "enum": ["", *voices]}]
    if rules.voice_pattern:
        names.append({"type": "string", "pattern": f"^(?:{rules.voice_pattern})$"})
    return {
        "anyOf": [
            *names,
            {"type": "object", "required": ["id"], "properties": {"id": {"anyOf": names}}},
        ],
        "description": "A voice id or an OpenAI voice name (case-insensitive), or empty to choose "
        'automatically; also OpenAI\'s object form {"id": "..."}'
        + (f"; {rules.voice_pattern_help}" if rules.voice_pattern else "")
        + ". GET /v1/voices lists the forms.",
    }


def _speech_body(
    settings: Settings,
    voices: list[str],
    rules: RequestRules,
    text_field: str,
    format_field: str,
    default_format: str,
    extra: dict,
) -> dict:
    tokens = (
        f" ChatTTS's inline control tokens reach the model unchanged: {TOKEN_FORMS}; another bracketed "
        "word such as [speed_5] is a 400 unknown_control_token."
        if rules.control_tokens
        else ""
    )
    properties: dict[str, Any] = {
        text_field: {
            "type": "string",
            "minLength": 1,
            "maxLength": settings.max_input_chars,
            "pattern": VISIBLE,
            "description": "The text to speak (zh and en are normalized: numbers, dates, units). It must "
            "contain something to speak: text of only white space, control or format characters is a 400 "
            "(the pattern is a conservative approximation of that rule). Long text is spoken whole, in "
            f"segments of up to {settings.segment_chars} characters cut at sentence ends; longer than "
            f"{settings.max_input_chars} characters is a 400 input_too_long." + tokens,
        },
        "voice": _voice(voices, rules),
        format_field: {"type": "string", "enum": list(FORMATS), "default": default_format},
        "speed": {"type": "number", "minimum": MIN_SPEED, "maximum": MAX_SPEED, "default": 1.0},
        "stream": {
            "type": "boolean",
            "default": False,
            "description": "Send the audio as it is made (chunked; X-TTS-Audio-Seconds is then absent). "
            f"Streamed formats: {', '.join(STREAM_FORMATS)}.",
        },
        **extra,
    }
    accepted = engine_fields(tuple(properties), rules)
    engine = _engine_properties(settings, rules)
    properties.update({name: engine[name] for name in accepted if name in engine})
    if rules.control_tokens:
        properties[text_field]["not"] = {"pattern": UNKNOWN_TOKEN_PATTERN}
    if "instructions" in accepted:
        properties["instructions"] = _instructions(rules)
    # null is read as "not given" (as OpenAI's API does), so every optional field is nullable.
    for name, schema in properties.items():
        if name != text_field:
            schema["nullable"] = True
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": [text_field],
                    "additionalProperties": False,
                    "properties": properties,
                    # The embedding is the voice: a request gives one or the other.
                    **(
                        {"not": {"required": ["voice", "speaker_embedding"]}}
                        if "speaker_embedding" in properties
                        else {}
                    ),
                    # A streamed request (stream: true, or a stream_format) needs a streamable format.
                    "anyOf": [
                        {"properties": {format_field: {"type": "string", "enum": list(STREAM_FORMATS)}}},
                        {
                            "properties": {"stream": {"type": "boolean", "enum": [False], "nullable": True}},
                            "not": {
                                "required": ["stream_format"],
                                "properties": {"stream_format": {"type": "string"}},
                            },
                        },
                    ],
                }
            }
        },
    }


def _audio_response() -> dict[str, Any]:
    content = {ctype: {"schema": {"type": "string", "format": "binary"}} for ctype in CONTENT_TYPES.values()}
    content["text/event-stream"] = {
        "schema": {  # one server-sent event (schemathesis checks each one against it)
            "type": "object",
            "required": ["data"],
            "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
            "description": 'stream_format "sse": data-only events whose data is JSON: '
            '{"type": "speech.audio.delta", "audio": "<base64>"} per chunk, then {"type": '
            '"speech.audio.done", "usage": {"input_tokens", "output_tokens", "total_tokens"}, '
            '"audio_seconds"}, or {"type": "error", "error": {...}} if the synthesis fails after '
            "the first event.",
        }
    }
    return {
        "description": "Mono 24 kHz audio in the requested format",
        "headers": {
            name: {"schema": {"type": "string"}}
            for name in (
                "X-TTS-Model",
                "X-TTS-Engine",
                "X-TTS-Voice",
                "X-TTS-Audio-Seconds",
                "X-TTS-Sample-Rate",
            )
        },
        "content": content,
    }


def _json_ok(description: str) -> dict[str, Any]:
    return {
        "200": {"description": description, "content": {"application/json": {"schema": {"type": "object"}}}}
    }


def build_openapi(settings: Settings, voices: list[str], rules: RequestRules) -> dict[str, Any]:
    """The description for a service with ``settings`` whose engine accepts ``voices`` and
    takes ``rules`` (its own request fields)."""
    synthesis_errors = _error_responses(400, 401, 413, 415, 500, 503, 504)
    openai_extra = {
        "model": {
            "type": "string",
            "default": DEFAULT_MODEL,
            "pattern": f"{MODEL_PATTERN}|^$",
            "description": "Any model name is accepted and echoed back in X-TTS-Model.",
        },
        "instructions": _instructions(rules),
        "stream_format": {
            "type": "string",
            "enum": list(STREAM_FORMAT_CHOICES),
            "description": "audio: the encoded audio as a chunked body; sse: OpenAI's server-sent events "
            "(speech.audio.delta with base64 audio, then speech.audio.done). Either streams.",
        },
    }
    probe = {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "kubetts TTS service",
            "version": __version__,
            "description": "Text-to-speech with a dynamic batcher; OpenAI-compatible speech endpoint.",
        },
        "paths": {
            "/v1/audio/speech": {
                "post": {
                    "operationId": "createSpeech",
                    "summary": "OpenAI-compatible text to speech",
                    "requestBody": _speech_body(
                        settings, voices, rules, "input", "response_format", "mp3", openai_extra
                    ),
                    "responses": {"200": _audio_response(), **synthesis_errors},
                }
            },
            "/tts": {
                "post": {
                    "operationId": "tts",
                    "summary": "Text to speech (WAV by default)",
                    "requestBody": _speech_body(settings, voices, rules, "text", "format", "wav", {}),
                    "responses": {"200": _audio_response(), **synthesis_errors},
                }
            },
            "/v1/voices": {
                "get": {
                    "operationId": "listVoices",
                    "summary": "Voices, aliases and the default",
                    "responses": {**_json_ok("Voices"), **_error_responses(401)},
                }
            },
            "/v1/models": {
                "get": {
                    "operationId": "listModels",
                    "summary": "OpenAI-style model list",
                    "responses": {**_json_ok("Models"), **_error_responses(401)},
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness",
                    "responses": {**probe, **_error_responses(401)},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Readiness (503 until warm, and while draining)",
                    "responses": {**probe, **_error_responses(401, 503)},
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_error_responses(401),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This description",
                    "responses": _json_ok("OpenAPI 3 document"),
                }
            },
            "/": {
                "get": {
                    "operationId": "playground",
                    "summary": "The playground page: type a text, listen (404 with TTS_PLAYGROUND=false)",
                    "responses": {
                        "200": {
                            "description": "The page",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        },
                        **_error_responses(404),
                    },
                }
            },
            "/playground/{name}": {
                "get": {
                    "operationId": "playgroundAsset",
                    "summary": "The playground page's script and style sheet",
                    "parameters": [
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "enum": list(playground_page.ASSETS)},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The file",
                            "content": {
                                "text/javascript": {"schema": {"type": "string"}},
                                "text/css": {"schema": {"type": "string"}},
                            },
                        },
                        **_error_responses(404),
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["message", "type", "param", "code"],
                            "properties": {
                                "message": {"type": "string"},
                                "type": {"type": "string"},
                                "param": {"type": "string", "nullable": True},
                                "code": {"type": "string"},
                            },
                        }
                    },
                }
            }
        },
    }
