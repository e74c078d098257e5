"""OpenAI's speech events: how a streamed answer is framed as server-sent events.

``stream_format: "sse"`` sends data-only events (as OpenAI's API does) whose data is JSON:
``speech.audio.delta`` with the next encoded chunk in base64, ``speech.audio.done`` with
usage at the end, or ``error`` (the same error object as a JSON error response) when the
synthesis fails after the first event.  Usage counts the input's characters as
``input_tokens`` and the audio in ChatTTS audio tokens (512 samples, 21.3 ms) as
``output_tokens``, for any engine: OpenAI's fields, filled with what a TTS server knows.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

CONTENT_TYPE = "text/event-stream"
SAMPLES_PER_AUDIO_TOKEN = 512


def sse_event(payload: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``payload`` as its JSON data."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class SpeechEvents:
    """The events of one streamed answer to a text of ``characters`` characters."""

    content_type = CONTENT_TYPE

    def __init__(self, characters: int, sample_rate: int) -> None:
        self._characters = characters
        self._sample_rate = sample_rate

    def chunk(self, data: bytes) -> bytes:
        return sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")})

    def done(self, samples: int) -> bytes:
        output = math.ceil(samples / SAMPLES_PER_AUDIO_TOKEN)
        return sse_event(
            {
                "type": "speech.audio.done",
                "usage": {
                    "input_tokens": self._characters,
                    "output_tokens": output,
                    "total_tokens": self._characters + output,
                },
                "audio_seconds": round(samples / self._sample_rate, 3),
            }
        )

    def error(self, body: dict[str, Any]) -> bytes:
        """The error event for an error whose JSON body is ``body`` ({"error": {...}})."""
        return sse_event({"type": "error", **body})
