"""OpenAI's server-sent-events streaming (``stream_format: "sse"``), read by a raw SSE parser
and by the official OpenAI SDK."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from test_api import metric, scrape
from test_streaming import RecordingEngine

SPEECH = "/v1/audio/speech"
THREE_SENTENCES = "First sentence here. 第二句话。 And the third one."


def parse_sse(raw: bytes) -> list[dict]:
    """Events of an event stream (WHATWG's rules: blank-line separated, ``data:`` lines joined
    with newlines, comments skipped), each event's data decoded as JSON."""
    events = []
    for block in raw.decode("utf-8").replace("\r\n", "\n").split("\n\n"):
        data = [line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")]
        if data:
            events.append(json.loads("\n".join(data)))
    assert raw.endswith(b"\n\n"), "an event stream ends with a complete event"
    return events


def audio_of(events: list[dict]) -> bytes:
    return b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")


async def test_sse_carries_the_same_audio_as_a_pcm_stream_and_ends_with_usage(client):
    body = {"input": THREE_SENTENCES, "response_format": "pcm", "stream_format": "sse"}
    response = await client.post(SPEECH, json=body)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-cache"
    events = parse_sse(await response.read())
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "speech.audio.done" and set(kinds[:-1]) == {"speech.audio.delta"}
    assert len(kinds) >= 3  # chunk by chunk (espeak streams sentence by sentence), not all at once
    pcm = audio_of(events)
    samples = len(pcm) // 2
    done = events[-1]
    assert done["usage"]["input_tokens"] == len(THREE_SENTENCES)
    assert done["usage"]["output_tokens"] == -(-samples // 512)
    assert done["usage"]["total_tokens"] == done["usage"]["input_tokens"] + done["usage"]["output_tokens"]
    assert done["audio_seconds"] == pytest.approx(samples / 24_000, abs=0.001)
    # The same request as raw audio: espeak is not bit-exact call to call, the length is close.
    raw = await (await client.post(SPEECH, json={**body, "stream_format": "audio"})).read()
    assert samples == pytest.approx(len(raw) // 2, rel=0.05)
    assert np.abs(np.frombuffer(pcm, "<i2")).max() > 1000  # speech, not silence


async def test_sse_with_an_encoded_format_decodes_to_one_file(client):
    response = await client.post(
        SPEECH, json={"input": "Hello there. Second.", "response_format": "wav", "stream_format": "sse"}
    )
    wav = audio_of(parse_sse(await response.read()))
    assert wav[:4] == b"RIFF" and len(wav) > 44 + 24_000  # one streamed WAV, header first


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi", "stream_format": "sse", "response_format": "flac"}, "response_format"),
        ({"input": "hi", "stream_format": "sse", "voice": "nobody"}, "voice"),
        ({"input": "", "stream_format": "sse"}, "input"),
    ],
)
async def test_sse_errors_before_the_first_event_are_json(client, body, param):
    response = await client.post(SPEECH, json=body)
    assert response.status == 400 and response.content_type == "application/json"
    assert (await response.json())["error"]["param"] == param


async def test_a_failure_after_the_first_event_is_an_error_event_and_the_service_goes_on(make_service_client):
    engine = RecordingEngine()  # fails a stream whose text says BREAK at its second step
    client = await make_service_client(engine)
    body = {
        "input": "First sentence. BREAK here. Never said.",
        "response_format": "pcm",
        "stream_format": "sse",
    }
    response = await client.post(SPEECH, json=body)
    assert response.status == 200
    events = parse_sse(await response.read())  # the stream ends cleanly after the error event
    assert [e["type"] for e in events] == ["speech.audio.delta", "error"]
    error = events[-1]["error"]
    assert error["code"] == "engine_error" and error["type"] == "server_error" and error["message"]
    samples = await scrape(client)
    assert metric(samples, "tts_engine_errors_total", code="engine_error") == 1
    assert metric(samples, "tts_streams_aborted_total", reason="engine_error") == 1
    ok = await client.post(SPEECH, json={**body, "input": "Still serving. Yes."})
    assert [e["type"] for e in parse_sse(await ok.read())][-1] == "speech.audio.done"
