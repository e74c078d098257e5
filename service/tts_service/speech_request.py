"""Validating request bodies (JSON already decoded) into :class:`SpeechRequest`.

Both synthesis endpoints -- OpenAI's ``POST /v1/audio/speech`` and the write-up's
``POST /tts`` -- are read into the same object here, so they share one pipeline and
one set of rules.  Every rejection is an :class:`~tts_service.errors.InvalidRequest`
naming the offending field (``param``) and what is allowed.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from .audio import FORMATS, STREAM_FORMATS
from .control_tokens import TOKEN_FORMS, unknown_tokens
from .engines.base import ENGINE_FIELDS, RequestRules, SynthesisOptions
from .errors import InvalidRequest
from .settings import SETTINGS_FIELDS, Settings
from .text_normalization import clean_text

MIN_SPEED = 0.25
MAX_SPEED = 4.0
DEFAULT_MODEL = "tts-1"
# OpenAI model names look like "tts-1" or "gpt-4o-mini-tts".  The name is echoed in the
# X-TTS-Model response header, so it is held to a header-safe identifier.
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"
_MODEL_RE = re.compile(MODEL_PATTERN)
OPENAI_FIELDS = (
    "model", "input", "voice", "response_format", "speed", "instructions", "stream_format", "stream"
)  # fmt: skip
TTS_FIELDS = ("text", "voice", "format", "speed", "stream")
STREAM_FORMAT_CHOICES = ("audio", "sse")
MAX_SEED = 2**32 - 1
# Per-request sampling controls take the range of the server setting of the same name.
_SETTING_RANGES = {f.name: (f.metadata["minimum"], f.metadata["maximum"]) for f in SETTINGS_FIELDS}
SAMPLING_RANGES: dict[str, tuple[float, float]] = {
    name: _SETTING_RANGES[name] for name in ("temperature", "top_p", "top_k")
}
INTEGER_FIELDS = ("seed", "top_k")


@dataclass(frozen=True)
class SpeechRequest:
    """A validated synthesis request, whichever endpoint it came through."""

    text: str
    voice: str | None
    response_format: str
    speed: float = 1.0
    model: str = DEFAULT_MODEL
    stream: bool = False
    sse: bool = False  # streamed as OpenAI's server-sent events (stream_format "sse")
    options: SynthesisOptions = field(default_factory=SynthesisOptions)
    speaker_embedding: str | None = None


# Integers longer than this are read as floats: Python refuses to turn a string of more than
# 4300 digits into an int (a ValueError, not a JSON error), and no field accepts a number this
# large anyway, so the field's own range check rejects it with ``param`` naming the field.
MAX_INTEGER_DIGITS = 40


def _read_integer(token: str) -> int | float:
    digits = len(token) - token.startswith("-")
    return int(token) if digits <= MAX_INTEGER_DIGITS else float(token)


def _read_constant(token: str) -> float:
    # NaN, Infinity and -Infinity are not JSON (RFC 8259), but Python's decoder accepts them;
    # they are read as what they spell, and every numeric field rejects non-finite numbers.
    return float(token)


def decode_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or an :class:`InvalidRequest` saying what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        body = json.loads(text, parse_int=_read_integer, parse_constant=_read_constant)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise InvalidRequest("the request body is nested too deeply to be a speech request") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"the request body must be a JSON object, got {_json_type(body)}")
    return body


def parse_openai_speech(body: dict[str, Any], settings: Settings, rules: RequestRules) -> SpeechRequest:
    """Validate an OpenAI ``audio.speech.create`` body for an engine taking ``rules``."""
    _reject_unknown(body, OPENAI_FIELDS, rules)
    model = _model(body)
    stream_format = _optional_string(body, "stream_format")
    if stream_format not in (None, *STREAM_FORMAT_CHOICES):
        raise InvalidRequest(
            f"stream_format {stream_format!r} is not supported; allowed: "
            f"{', '.join(map(repr, STREAM_FORMAT_CHOICES))}",
            param="stream_format",
        )
    # Asking for a stream format, or stream: true, asks for the audio as it is made.
    stream = _stream(body) or stream_format is not None
    response_format = _format(body, "response_format", default="mp3")
    return SpeechRequest(
        text=_text(body, "input", settings, rules),
        voice=_voice(body),
        response_format=_streamable(response_format, stream, "response_format"),
        speed=_speed(body),
        model=model,
        stream=stream,
        sse=stream_format == "sse",
        options=_options(body, _instructions(body, rules)),
        speaker_embedding=_speaker_embedding(body, rules),
    )


def parse_tts(body: dict[str, Any], settings: Settings, rules: RequestRules) -> SpeechRequest:
    """Validate a ``POST /tts`` body: ``{"text", "voice", "format", "speed", "stream"}`` and the
    engine's own fields (``seed``, ``temperature``... for ChatTTS)."""
    _reject_unknown(body, TTS_FIELDS, rules)
    stream = _stream(body)
    return SpeechRequest(
        text=_text(body, "text", settings, rules),
        voice=_voice(body),
        response_format=_streamable(_format(body, "format", default="wav"), stream, "format"),
        speed=_speed(body),
        stream=stream,
        options=_options(body, _instructions(body, rules)),
        speaker_embedding=_speaker_embedding(body, rules),
    )


def engine_fields(endpoint_fields: tuple[str, ...], rules: RequestRules) -> tuple[str, ...]:
    """The fields a body may have: the endpoint's own and those of the engine's it takes."""
    extra = [name for name in ENGINE_FIELDS if name in rules.fields and name not in endpoint_fields]
    return (*endpoint_fields, *extra)


def _options(body: dict[str, Any], refine_prompt: str | None) -> SynthesisOptions:
    seed = _number(body, "seed", 0, MAX_SEED, integer=True)
    sampling = {
        name: _number(body, name, low, high, integer=name in INTEGER_FIELDS)
        for name, (low, high) in SAMPLING_RANGES.items()
    }
    return SynthesisOptions(
        seed=None if seed is None else int(seed),
        temperature=sampling["temperature"],
        top_p=sampling["top_p"],
        top_k=None if sampling["top_k"] is None else int(sampling["top_k"]),
        refine_prompt=refine_prompt,
    )


def _instructions(body: dict[str, Any], rules: RequestRules) -> str | None:
    """OpenAI's ``instructions``: "" and null mean none; others must be what the engine takes."""
    value = _optional_string(body, "instructions")
    if not value:
        return None
    if rules.instructions is None or not re.fullmatch(rules.instructions, value):
        raise InvalidRequest(
            f"instructions {value[:80]!r} cannot be honoured: {rules.instructions_help}", param="instructions"
        )
    return value


def _speaker_embedding(body: dict[str, Any], rules: RequestRules) -> str | None:
    value = _optional_string(body, "speaker_embedding")
    if value is None:
        return None
    if not value or len(value) > rules.max_embedding_chars:
        raise InvalidRequest(
            f"speaker_embedding must be a ChatTTS speaker embedding string of 1 to "
            f"{rules.max_embedding_chars} characters, got {len(value)}",
            param="speaker_embedding",
        )
    if body.get("voice") not in (None, ""):
        raise InvalidRequest(
            "give either voice or speaker_embedding, not both: the embedding is the voice",
            param="speaker_embedding",
        )
    return value


def _stream(body: dict[str, Any]) -> bool:
    value = body.get("stream")
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest(f"stream must be true or false, got {_json_type(value)}", param="stream")
    return value


def _streamable(response_format: str, stream: bool, param: str) -> str:
    if stream and response_format not in STREAM_FORMATS:
        raise InvalidRequest(
            f"{response_format} cannot be streamed (it needs the whole signal first); "
            f"streamed formats: {', '.join(STREAM_FORMATS)}",
            param=param,
        )
    return response_format


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _reject_unknown(body: dict[str, Any], endpoint_fields: tuple[str, ...], rules: RequestRules) -> None:
    allowed = engine_fields(endpoint_fields, rules)
    unsupported = sorted(n for n in set(body) - set(allowed) if n in ENGINE_FIELDS)
    if unsupported:  # a field some engine takes, but not this one (even as null)
        takes = [n for n in ENGINE_FIELDS if n in rules.fields]
        raise InvalidRequest(
            f"{', '.join(map(repr, unsupported))} {'is' if len(unsupported) == 1 else 'are'} not supported "
            f"by the {rules.engine} engine; its own fields: {', '.join(takes) or 'none'} "
            f"(the chattts engine takes {', '.join(ENGINE_FIELDS)})",
            param=unsupported[0],
            code="unsupported_field",
        )
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise InvalidRequest(
            f"unrecognized field(s) {', '.join(map(repr, unknown))}; allowed fields: {', '.join(allowed)}",
            param=unknown[0],
        )


def _optional_string(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string, got {_json_type(value)}", param=name)
    return value


def _model(body: dict[str, Any]) -> str:
    model = _optional_string(body, "model")
    if model is None or model == "":
        return DEFAULT_MODEL
    if not _MODEL_RE.fullmatch(model):
        raise InvalidRequest(
            "model must be a model name of 1-128 characters: letters, digits and . _ : / - "
            f"(e.g. {DEFAULT_MODEL!r})",
            param="model",
        )
    return model


def _text(body: dict[str, Any], name: str, settings: Settings, rules: RequestRules) -> str:
    if name not in body or body[name] is None:
        raise InvalidRequest(f"{name} is required: the text to speak", param=name)
    value = body[name]
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string, got {_json_type(value)}", param=name)
    if len(value) > settings.max_input_chars:
        raise InvalidRequest(
            f"{name} is {len(value)} characters long; the maximum is {settings.max_input_chars}",
            param=name,
            code="input_too_long",
        )
    if not clean_text(value):
        raise InvalidRequest(
            f"{name} must contain text to speak, not only white space or control characters", param=name
        )
    if rules.control_tokens and (unknown := unknown_tokens(value)):
        raise InvalidRequest(
            f"{name} contains {', '.join(unknown[:5])}, which {'is' if len(unknown) == 1 else 'are'} not "
            f"ChatTTS control token(s); the {rules.engine} engine reads {TOKEN_FORMS} (speed comes from "
            "the speed field); write other bracketed words without their brackets",
            param=name,
            code="unknown_control_token",
        )
    return value


def _voice(body: dict[str, Any]) -> str | None:
    value = body.get("voice")
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        value = value["id"]  # OpenAI's custom-voice form {"id": "..."}
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"voice must be a string, got {_json_type(value)}", param="voice")
    return value


def _format(body: dict[str, Any], name: str, default: str) -> str:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, str) or value.lower() not in FORMATS:
        shown = value if isinstance(value, str) else _json_type(value)
        raise InvalidRequest(
            f"{name} {shown!r} is not supported; supported formats: {', '.join(FORMATS)}",
            param=name,
            code="unsupported_format",
        )
    return value.lower()


def _number(
    body: dict[str, Any], name: str, minimum: float, maximum: float, *, integer: bool = False
) -> float | None:
    """A JSON number from ``minimum`` to ``maximum`` (None when absent); anything else is a 400.

    Rejected with ``param=name``: strings (even "1.5"), booleans, NaN and infinities, and
    numbers outside the range (huge integers arrive here as floats, see
    :data:`MAX_INTEGER_DIGITS`).  -0 is 0.  With ``integer``, also fractions; JSON has one
    number type, so 2.0 and 2e0 count as the integer 2 (returned as an int).
    """
    value = body.get(name)
    if value is None:
        return None
    allowed = (
        f"an integer from {int(minimum)} to {int(maximum)}"
        if integer
        else f"a number from {minimum} to {maximum}"
    )
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"{name} must be {allowed}, got {_json_type(value)}", param=name)
    number = float(value)  # exact for every int of up to MAX_INTEGER_DIGITS digits in range
    if not math.isfinite(number):
        shown = "NaN" if math.isnan(number) else "an infinite or too large number"
        raise InvalidRequest(f"{name} must be {allowed}, got {shown}", param=name)
    if not minimum <= number <= maximum:
        shown = f"{number:g}" if abs(number) < 1e16 else "a number of that size"
        raise InvalidRequest(f"{name} {shown} is out of range: allowed {allowed}", param=name)
    if integer:
        if not number.is_integer():
            raise InvalidRequest(f"{name} must be {allowed}, got a fraction", param=name)
        return int(number)
    return number + 0.0  # -0.0 -> 0.0


def _speed(body: dict[str, Any]) -> float:
    speed = _number(body, "speed", MIN_SPEED, MAX_SPEED)
    return 1.0 if speed is None else speed
