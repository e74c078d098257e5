"""Streamed responses: chunked audio as the engine makes it (espeak: sentence by sentence)."""

from __future__ import annotations

import asyncio
import threading

import aiohttp
import numpy as np
import pytest
from test_api import metric, scrape
from tts_service.audio import WAV_UNKNOWN_SIZE, StreamEncoder
from tts_service.engines.espeak import EspeakEngine

SPEECH = "/v1/audio/speech"
THREE_SENTENCES = "The first sentence is here. The second one follows! 第三句话在这里。"


async def read_http_chunks(response) -> list[bytes]:
    """The body as the HTTP chunks the server wrote (aiohttp keeps their boundaries)."""
    chunks, current = [], b""
    async for data, end_of_http_chunk in response.content.iter_chunks():
        current += data
        if end_of_http_chunk:
            chunks.append(current)
            current = b""
    if current:
        chunks.append(current)
    return chunks


async def test_pcm_streams_sentence_by_sentence(client):
    response = await client.post(
        SPEECH, json={"input": THREE_SENTENCES, "response_format": "pcm", "stream": True}
    )
    assert response.status == 200
    assert response.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in response.headers
    assert response.headers["Content-Type"] == "audio/pcm" and response.headers["X-TTS-Engine"] == "espeak"
    chunks = await read_http_chunks(response)
    audio_chunks = [c for c in chunks if c]
    assert len(audio_chunks) >= 3  # one per sentence at least: the first was sent before the last was made
    body = b"".join(chunks)
    assert len(body) % 2 == 0 and len(body) / 2 / 24_000 > 1.5  # seconds of 16-bit mono 24 kHz


async def test_wav_stream_has_a_streaming_header(client):
    response = await client.post(
        SPEECH, json={"input": THREE_SENTENCES, "response_format": "wav", "stream": True}
    )
    body = await response.read()
    assert body[:4] == b"RIFF" and body[8:12] == b"WAVE" and body[36:40] == b"data"
    assert int.from_bytes(body[4:8], "little") == WAV_UNKNOWN_SIZE == int.from_bytes(body[40:44], "little")
    assert int.from_bytes(body[22:24], "little") == 1 and int.from_bytes(body[24:28], "little") == 24_000
    samples = np.frombuffer(body[44:], dtype="<i2")
    assert samples.size > 24_000 and np.abs(samples).max() > 1000  # real audio, not silence


async def test_mp3_stream_is_mpeg_frames(client):
    response = await client.post(SPEECH, json={"input": THREE_SENTENCES, "stream_format": "audio"})
    assert response.status == 200 and response.headers["Content-Type"] == "audio/mpeg"
    assert response.headers.get("Transfer-Encoding") == "chunked"  # stream_format "audio" asks for a stream
    body = await response.read()
    assert body[0] == 0xFF and body[1] & 0xE0 == 0xE0  # an MPEG frame sync
    assert len(body) > 4000


def test_stream_encoder_pieces_add_up():
    pcm = StreamEncoder("pcm", 24_000)
    audio = np.linspace(-1, 1, 4800, dtype=np.float32)
    assert pcm.encode(audio[:2400]) + pcm.encode(audio[2400:]) + pcm.finish() == StreamEncoder(
        "pcm", 24_000
    ).encode(audio)
    wav = StreamEncoder("wav", 24_000)
    assert wav.finish()[:4] == b"RIFF"  # an empty stream is still a valid (empty) WAV
    with pytest.raises(ValueError):
        StreamEncoder("flac", 24_000)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi", "response_format": "flac", "stream": True}, "response_format"),
        ({"input": "hi", "stream": "yes"}, "stream"),
        ({"input": "hi", "stream_format": "sse", "response_format": "flac"}, "response_format"),
        ({"input": "hi", "stream_format": "events"}, "stream_format"),
        ({"input": "hi", "stream": True, "voice": "nobody"}, "voice"),
    ],
)
async def test_stream_errors_before_audio_are_ordinary_json(client, body, param):
    response = await client.post(SPEECH, json=body)
    assert response.status == 400
    assert (await response.json())["error"]["param"] == param


async def test_tts_endpoint_streams_too(client):
    response = await client.post("/tts", json={"text": THREE_SENTENCES, "stream": True})
    body = await response.read()
    assert response.status == 200 and body[:4] == b"RIFF"
    assert response.headers.get("Transfer-Encoding") == "chunked"


class RecordingEngine(EspeakEngine):
    """The real engine, recording each call's kind and size; fails streams on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def synthesize(self, items):
        with self.lock:
            self.calls.append(("whole", len(items)))
        return super().synthesize(items)

    def synthesize_stream(self, items, wanted=lambda i: True, eager=lambda i: True):
        with self.lock:
            self.calls.append(("stream", len(items)))
        for step, chunks in enumerate(super().synthesize_stream(items, wanted)):
            if step == 1 and any("BREAK" in item.text for item in items):
                raise RuntimeError("the engine broke mid-stream")
            yield chunks


async def test_streams_batch_with_each_other_never_with_whole_requests(make_service_client):
    engine = RecordingEngine()
    client = await make_service_client(engine, max_batch_size=8, max_wait_ms=1000)
    engine.calls.clear()  # forget the warmup
    bodies = [
        {"input": f"Stream {i}. Second part.", "response_format": "pcm", "stream": True} for i in range(3)
    ]
    bodies += [{"input": f"Whole {i}.", "response_format": "pcm"} for i in range(2)]
    responses = await asyncio.gather(*(client.post(SPEECH, json=b) for b in bodies))
    assert [r.status for r in responses] == [200] * 5
    assert all([len(await r.read()) > 0 for r in responses])
    assert sorted(engine.calls) == [("stream", 3), ("whole", 2)]
    samples = await scrape(client)
    assert metric(samples, "tts_time_to_first_audio_seconds_count") == 3


async def test_a_stream_that_fails_after_audio_went_out_is_cut_off_and_the_service_goes_on(
    make_service_client,
):
    engine = RecordingEngine()
    client = await make_service_client(engine)
    response = await client.post(
        SPEECH,
        json={"input": "First sentence. BREAK here. Never said.", "response_format": "pcm", "stream": True},
    )
    assert response.status == 200  # the status line went out with the first sentence
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()  # ...and the body ends without HTTP's final chunk: visibly incomplete
    samples = await scrape(client)
    assert metric(samples, "tts_engine_errors_total", code="engine_error") == 1
    ok = await client.post(
        SPEECH, json={"input": "Still serving. Yes.", "response_format": "pcm", "stream": True}
    )
    assert ok.status == 200 and len(await ok.read()) > 0


async def test_a_stream_that_fails_before_any_audio_is_a_json_500(make_service_client):
    class FailingAtOnce(RecordingEngine):
        def synthesize_stream(self, items, wanted=lambda i: True, eager=lambda i: True):
            raise RuntimeError("no audio at all")
            yield  # a generator

    client = await make_service_client(FailingAtOnce())
    response = await client.post(SPEECH, json={"input": "Nothing.", "stream": True})
    assert response.status == 500
    assert "no audio at all" in (await response.json())["error"]["message"]


async def test_a_poisoned_stream_fails_alone_when_nothing_was_sent_yet(make_service_client):
    class PoisonOnStart(RecordingEngine):
        def synthesize_stream(self, items, wanted=lambda i: True, eager=lambda i: True):
            with self.lock:
                self.calls.append(("stream", len(items)))
            if any("POISON" in item.text for item in items):
                raise RuntimeError("poisoned input")
            yield from EspeakEngine.synthesize_stream(self, items, wanted)

    engine = PoisonOnStart()
    client = await make_service_client(engine, max_batch_size=8, max_wait_ms=1000)
    engine.calls.clear()
    texts = ["Fine one. Yes.", "POISON here.", "Fine two. Yes."]
    responses = await asyncio.gather(
        *(client.post(SPEECH, json={"input": t, "response_format": "pcm", "stream": True}) for t in texts)
    )
    assert [r.status for r in responses] == [200, 500, 200]
    assert all([len(await responses[i].read()) > 0 for i in (0, 2)])
    assert "poisoned input" in (await responses[1].json())["error"]["message"]
    assert engine.calls[0] == ("stream", 3)  # one batch first, then retried in halves
