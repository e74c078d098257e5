"""The official OpenAI Python SDK works against the service with only base_url changed."""

from __future__ import annotations

import io
import wave

import openai
import pytest
from service_process import running_service


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
    with pytest.raises(openai.BadRequestError):
        client.audio.speech.create(model="tts-1", voice="alloy", input="hi", response_format="opus")
