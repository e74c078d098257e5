"""The official OpenAI Python SDK works against the service with only base_url changed."""

from __future__ import annotations

import io
import json
import wave

import openai
import pytest
from service_process import running_service
from test_sse import audio_of


@pytest.fixture(scope="module")
def service():
    with running_service() as running:
        yield running


def test_openai_sdk_speech(service):
    client = openai.OpenAI(base_url=service.url + "/v1", api_key="unused", max_retries=0)
    response = client.audio.speech.create(
        model="tts-1", voice="alloy", input="Hello from the OpenAI SDK.", response_format="wav"
    )
    with wave.open(io.BytesIO(response.content)) as wav:
        assert wav.getframerate() == 24_000
        assert wav.getnframes() / 24_000 > 0.5


def test_openai_sdk_default_format_and_streaming_response(service):
    client = openai.OpenAI(base_url=service.url + "/v1", api_key="unused", max_retries=0)
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="coral", input="你好，世界。", speed=1.5
    ) as response:
        body = response.read()
        assert response.headers["content-type"] == "audio/mpeg"
        assert response.headers["x-tts-voice"] == "cmn+f2"
    assert len(body) > 1000


def test_openai_sdk_reads_a_real_stream_chunk_by_chunk(service):
    client = openai.OpenAI(base_url=service.url + "/v1", api_key="unused", max_retries=0)
    with client.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="nova",
        input="Hello! 你好！ This is streamed.",
        response_format="pcm",
        extra_body={"stream": True},
    ) as response:
        assert response.headers["transfer-encoding"] == "chunked"
        chunks = [chunk for chunk in response.iter_bytes() if chunk]
    assert len(chunks) >= 1 and sum(len(c) for c in chunks) / 2 / 24_000 > 1.0


def test_openai_sdk_sees_errors_as_bad_request(service):
    client = openai.OpenAI(base_url=service.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.audio.speech.create(model="tts-1", voice="robot9000", input="hi")
    assert excinfo.value.status_code == 400
    assert "unknown voice" in str(excinfo.value)
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.audio.speech.create(model="tts-1", voice="alloy", input="hi", instructions="Whisper.")
    assert "instructions" in str(excinfo.value)


@pytest.mark.parametrize(("fmt", "container"), [("opus", "ogg"), ("aac", "aac")])
def test_openai_sdk_opus_and_aac(service, fmt, container):
    import av

    client = openai.OpenAI(base_url=service.url + "/v1", api_key="unused", max_retries=0)
    response = client.audio.speech.create(
        model="tts-1", voice="alloy", input="Opus or AAC.", response_format=fmt
    )
    with av.open(io.BytesIO(response.content)) as decoded:
        assert decoded.format.name == container
        seconds = sum(frame.samples / frame.sample_rate for frame in decoded.decode(audio=0))
    assert seconds == pytest.approx(float(response.response.headers["x-tts-audio-seconds"]), abs=0.1)


def test_openai_sdk_streams_sse_events(service):
    """The SDK's streaming helper reads the event stream line by line, as its docs show."""
    client = openai.OpenAI(base_url=service.url + "/v1", api_key="unused", max_retries=0)
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts",
        voice="coral",
        input="Streamed as events. 你好。",
        response_format="pcm",
        stream_format="sse",
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]
    assert events[-1]["type"] == "speech.audio.done"
    pcm = audio_of(events)
    assert len(pcm) / 2 / 24_000 > 1.0
    assert events[-1]["usage"]["output_tokens"] == -(-len(pcm) // 2 // 512)


def test_openai_sdk_sse_error_before_audio_is_a_bad_request(service):
    client = openai.OpenAI(base_url=service.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as excinfo:
        with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input="hi", response_format="flac", stream_format="sse"
        ):
            pass
    assert "cannot be streamed" in str(excinfo.value)
