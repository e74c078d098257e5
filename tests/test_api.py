"""The HTTP API through aiohttp's test client, on the real espeak engine."""

from __future__ import annotations

import asyncio
import io
import threading
import wave

import numpy as np
import pytest
import soundfile
from app_client import service_of, started
from metric_samples import Samples, metric, samples_of  # noqa: F401  (metric: re-exported)
from tts_service.app import create_app
from tts_service.engines.espeak import EspeakEngine
from tts_service.settings import Settings
from tts_service.speech_service import SpeechService

SPEECH = "/v1/audio/speech"


def wav_seconds(body: bytes) -> float:
    with wave.open(io.BytesIO(body)) as wav:
        assert wav.getframerate() == 24_000 and wav.getnchannels() == 1
        return wav.getnframes() / wav.getframerate()


async def scrape(client) -> Samples:
    """All samples of /metrics as {(name, sorted labels): value}."""
    response = await client.get("/metrics")
    assert response.status == 200
    return samples_of(await response.text())


async def assert_error(response, status: int, param: str | None = None, *, contains: str = ""):
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    error = (await response.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and error["type"] in ("invalid_request_error", "server_error")
    assert error["param"] == param
    assert contains in error["message"]
    return error


# -- synthesis --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("wav", "audio/wav"), ("pcm", "audio/pcm"), ("flac", "audio/flac"), ("mp3", "audio/mpeg")],
)
async def test_speech_in_every_format(client, fmt, content_type):
    response = await client.post(
        SPEECH,
        json={"model": "tts-1", "input": "Hello from kubetts.", "voice": "nova", "response_format": fmt},
    )
    assert response.status == 200
    assert response.content_type == content_type
    assert response.headers["X-TTS-Model"] == "tts-1"
    assert response.headers["X-TTS-Voice"] == "en-us+f3"
    body = await response.read()
    audio_seconds = float(response.headers["X-TTS-Audio-Seconds"])
    assert 0.5 < audio_seconds < 5
    if fmt == "wav":
        assert wav_seconds(body) == pytest.approx(audio_seconds, abs=0.01)
    elif fmt == "pcm":
        assert len(body) / 2 / 24_000 == pytest.approx(audio_seconds, abs=0.01)
    elif fmt == "flac":
        data, rate = soundfile.read(io.BytesIO(body))
        assert rate == 24_000 and data.size / rate == pytest.approx(audio_seconds, abs=0.01)
    else:
        assert len(body) > 1000


async def test_openai_default_format_is_mp3(client):
    response = await client.post(SPEECH, json={"model": "tts-1", "input": "Hi", "voice": "alloy"})
    assert response.status == 200 and response.content_type == "audio/mpeg"


async def test_mandarin_is_spoken_with_the_mandarin_voice(client):
    response = await client.post(
        SPEECH, json={"input": "今天是2024年5月1日，气温25℃。", "response_format": "wav"}
    )
    assert response.status == 200
    assert response.headers["X-TTS-Voice"] == "cmn"
    # The date and temperature are spoken as words: several seconds, not a blip.
    assert wav_seconds(await response.read()) > 3


async def test_tts_endpoint_defaults_to_wav(client):
    response = await client.post("/tts", json={"text": "你好，世界"})
    assert response.status == 200 and response.content_type == "audio/wav"
    assert wav_seconds(await response.read()) > 0.5


async def test_tts_endpoint_takes_voice_format_and_speed(client):
    slow = await client.post(
        "/tts", json={"text": "Speed test sentence.", "voice": "en-gb", "format": "wav", "speed": 0.5}
    )
    fast = await client.post(
        "/tts", json={"text": "Speed test sentence.", "voice": "en-gb", "format": "wav", "speed": 2}
    )
    assert slow.status == fast.status == 200
    assert slow.headers["X-TTS-Voice"] == "en-gb"
    assert wav_seconds(await slow.read()) > 1.5 * wav_seconds(await fast.read())


async def test_openai_custom_voice_object_form(client):
    response = await client.post(
        SPEECH, json={"input": "Hi", "voice": {"id": "cmn+f2"}, "response_format": "pcm"}
    )
    assert response.status == 200 and response.headers["X-TTS-Voice"] == "cmn+f2"


# -- discovery and probes ---------------------------------------------------------------


async def test_voices_lists_voices_and_aliases(client):
    body = await (await client.get("/v1/voices")).json()
    ids = {v["id"] for v in body["voices"]}
    assert {"en-us", "cmn", "en-gb", "cmn+f2"} <= ids
    assert {"alloy", "echo", "fable", "onyx", "nova", "shimmer"} <= set(body["aliases"])
    assert body["engine"] == "espeak"
    forms = {f["form"]: f for f in body["forms"]}
    assert set(forms) == {"id", "alias", "default", "variant"}  # no seed-N or embeddings with espeak
    assert "f2" in forms["variant"]["description"]


async def test_models(client):
    body = await (await client.get("/v1/models")).json()
    assert body["object"] == "list" and "tts-1" in {m["id"] for m in body["data"]}


async def test_health_and_ready(client):
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["status"] == "ready"


class SlowLoadingEngine(EspeakEngine):
    """The real engine whose load waits until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def load(self) -> None:
        assert self.release.wait(timeout=30)
        super().load()


async def test_not_ready_until_warmed_up(aiohttp_client):
    engine = SlowLoadingEngine()
    service = SpeechService(Settings(), engine)
    client = await aiohttp_client(create_app(service.settings, service))  # loading, not ready
    assert (await client.get("/healthz")).status == 200
    not_ready = await client.get("/readyz")
    assert not_ready.status == 503 and (await not_ready.json())["status"] == "starting"
    early = await client.post(SPEECH, json={"input": "too early"})
    error = await assert_error(early, 503, contains="not ready")
    assert error["code"] == "not_ready" and "Retry-After" in early.headers
    engine.release.set()
    await started(client)
    assert (await client.get("/readyz")).status == 200
    assert (await client.post(SPEECH, json={"input": "now"})).status == 200


# -- errors -------------------------------------------------------------------------------


async def test_malformed_json(client):
    response = await client.post(SPEECH, data=b"{not json", headers={"Content-Type": "application/json"})
    await assert_error(response, 400, contains="not valid JSON")


async def test_body_must_be_an_object(client):
    await assert_error(await client.post(SPEECH, json=["input"]), 400, contains="JSON object")


async def test_deeply_nested_json_is_a_client_error(client):
    body = b"[" * 50_000 + b"]" * 50_000
    response = await client.post(SPEECH, data=body, headers={"Content-Type": "application/json"})
    assert response.status in (400, 413)
    assert "error" in await response.json()


async def test_invalid_utf8(client):
    response = await client.post(
        SPEECH, data=b'{"input": "\xff\xfe"}', headers={"Content-Type": "application/json"}
    )
    await assert_error(response, 400, contains="UTF-8")


async def test_wrong_content_type(client):
    response = await client.post(
        SPEECH, data="input=hello", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    await assert_error(response, 415, contains="application/json")


@pytest.mark.parametrize(
    ("body", "param", "contains"),
    [
        ({"model": "tts-1"}, "input", "required"),
        ({"input": ""}, "input", "text to speak"),
        ({"input": "  \n\t "}, "input", "text to speak"),
        ({"input": "\x00\x01"}, "input", "text to speak"),
        ({"input": 42}, "input", "must be a string"),
        ({"input": "hi", "voice": "robot9000"}, "voice", "unknown voice"),
        ({"input": "hi", "voice": 7}, "voice", "must be a string"),
        ({"input": "hi", "speed": 5}, "speed", "0.25 to 4.0"),
        ({"input": "hi", "speed": 0.1}, "speed", "0.25 to 4.0"),
        ({"input": "hi", "speed": "fast"}, "speed", "number"),
        ({"input": "hi", "speed": True}, "speed", "number"),
        ({"input": "hi", "response_format": "ogg"}, "response_format", "mp3, wav, flac, pcm, opus, aac"),
        ({"input": "hi", "response_format": 3}, "response_format", "supported formats"),
        ({"input": "hi", "model": 5}, "model", "must be a string"),
        ({"input": "hi", "stream_format": "json"}, "stream_format", "allowed: 'audio', 'sse'"),
        ({"input": "hi", "seed": 7}, "seed", "not supported by the espeak engine"),
        ({"input": "hi", "temperature": None}, "temperature", "not supported by the espeak engine"),
        ({"input": "hi", "top_k": 5}, "top_k", "not supported by the espeak engine"),
        ({"input": "hi", "speaker_embedding": "x"}, "speaker_embedding", "not supported"),
        ({"input": "hi", "instructions": "Speak cheerfully."}, "instructions", "takes no instructions"),
        ({"input": "hi", "sped": 2}, "sped", "allowed fields"),
    ],
)
async def test_invalid_openai_bodies(client, body, param, contains):
    await assert_error(await client.post(SPEECH, json=body), 400, param, contains=contains)


async def test_nan_speed_is_rejected(client):
    response = await client.post(
        SPEECH, data=b'{"input": "hi", "speed": NaN}', headers={"Content-Type": "application/json"}
    )
    await assert_error(response, 400, "speed")


async def test_invalid_tts_bodies(client):
    await assert_error(
        await client.post("/tts", json={"input": "hi"}), 400, "input", contains="allowed fields: text"
    )
    await assert_error(await client.post("/tts", json={"text": "hi", "format": "ogg"}), 400, "format")


async def test_input_too_long(make_client):
    client = await make_client(max_input_chars=10)
    error = await assert_error(
        await client.post(SPEECH, json={"input": "x" * 11}), 400, "input", contains="maximum is 10"
    )
    assert error["code"] == "input_too_long"
    assert (await client.post(SPEECH, json={"input": "x" * 10, "response_format": "pcm"})).status == 200


async def test_body_too_large(make_client):
    client = await make_client(max_body_bytes=2048)
    await assert_error(await client.post(SPEECH, json={"input": "y" * 5000}), 413, contains="2048")

    async def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(10):
            yield b" " * 1024

    response = await client.post(SPEECH, data=chunks(), headers={"Content-Type": "application/json"})
    await assert_error(response, 413)


async def test_unknown_route_and_method_are_json(client):
    await assert_error(await client.get("/nope"), 404, contains="/v1/audio/speech")
    await assert_error(await client.get(SPEECH), 405, contains="POST")


async def test_service_keeps_serving_after_errors(client):
    for body in ({"input": ""}, {"input": "hi", "voice": "x"}, {"input": "hi", "speed": 9}):
        assert (await client.post(SPEECH, json=body)).status == 400
    assert (await client.post(SPEECH, json={"input": "still here", "response_format": "pcm"})).status == 200


# -- metrics ------------------------------------------------------------------------------


async def test_metrics_move(client):
    before = await scrape(client)
    assert (await client.post(SPEECH, json={"input": "Count me.", "response_format": "pcm"})).status == 200
    assert (await client.post(SPEECH, json={"input": "x", "speed": 99})).status == 400
    after = await scrape(client)
    route = (("code", "200"), ("route", SPEECH))
    assert after[("tts_requests_total", route)] == before.get(("tts_requests_total", route), 0) + 1
    assert (
        metric(after, "tts_rejected_total", reason="invalid_request")
        == metric(before, "tts_rejected_total", reason="invalid_request") + 1
    )
    assert metric(after, "tts_audio_seconds_total") > metric(before, "tts_audio_seconds_total")
    assert metric(after, "tts_batch_size_count") == metric(before, "tts_batch_size_count") + 1
    assert (
        metric(after, "tts_request_duration_seconds_count", route=SPEECH)
        == metric(before, "tts_request_duration_seconds_count", route=SPEECH) + 2
    )
    assert metric(after, "tts_inference_duration_seconds_count") > metric(
        before, "tts_inference_duration_seconds_count"
    )
    assert metric(after, "tts_queue_wait_seconds_count") == metric(before, "tts_queue_wait_seconds_count") + 1
    assert metric(after, "tts_ready") == 1
    # espeak has no token loop: it is batched per request whatever TTS_SCHEDULER says
    assert metric(after, "tts_build_info", engine="espeak", version="0.1.0", scheduler="request") == 1
    assert ("tts_queue_depth", ()) in after and ("tts_inflight_requests", ()) in after
    assert metric(after, "process_resident_memory_bytes") > 0


async def test_the_autoscalers_latency_counts_only_successful_whole_files(make_client):
    """tts_synthesis_duration_seconds: a 200 with a whole file, not a fast 400 or 503 (they would
    dilute the p99 under overload) nor a stream (its duration is the audio's length)."""
    client = await make_client()

    def count(samples) -> float:
        return metric(samples, "tts_synthesis_duration_seconds_count", route=SPEECH)

    before = await scrape(client)
    assert (await client.post(SPEECH, json={"input": "Whole.", "response_format": "pcm"})).status == 200
    assert count(await scrape(client)) == count(before) + 1
    assert (await client.post(SPEECH, json={"input": "x", "speed": 99})).status == 400
    streamed = await client.post(
        SPEECH, json={"input": "A stream. Of two.", "response_format": "pcm", "stream": True}
    )
    assert streamed.status == 200 and await streamed.read()
    after = await scrape(client)
    assert count(after) == count(before) + 1  # (503s: test_queue_full_is_503_with_retry_after)
    assert (
        metric(after, "tts_request_duration_seconds_count", route=SPEECH)
        == metric(before, "tts_request_duration_seconds_count", route=SPEECH) + 3
    )


class GatedEngine(EspeakEngine):
    """The real engine whose first synthesis waits for ``gate``: requests pile up behind it."""

    def __init__(self) -> None:
        super().__init__()
        self.gate, self.entered = threading.Event(), threading.Event()

    def synthesize(self, items):
        if not self.entered.is_set():
            self.entered.set()
            assert self.gate.wait(timeout=30), "the test never opened the gate"
        return super().synthesize(items)


async def test_concurrent_requests_are_batched(make_service_client):
    engine = GatedEngine()
    client = await make_service_client(engine, max_batch_size=8, max_wait_ms=5000, warmup=False)
    before = await scrape(client)
    post = lambda t: client.post(SPEECH, json={"input": t, "response_format": "pcm"})  # noqa: E731
    first = asyncio.ensure_future(post("The first request."))
    await wait_until(engine.entered.is_set)  # it started alone at once: nothing overlapped it
    texts = [f"Request number {i}." for i in range(16)]
    rest = [asyncio.ensure_future(post(t)) for t in texts]
    await wait_until(lambda: service_of(client).batcher.queued_items == 16)
    engine.gate.set()
    responses = await asyncio.gather(first, *rest)
    assert [r.status for r in responses] == [200] * 17
    after = await scrape(client)
    batches = metric(after, "tts_batch_size_count") - metric(before, "tts_batch_size_count")
    items = metric(after, "tts_batch_size_sum") - metric(before, "tts_batch_size_sum")
    assert items == 17
    assert batches == 3  # the first alone, then the 16 that arrived behind it in two full batches of 8
    # Each response is its own text: longer numbers' audio is not swapped between requests.
    lengths = [len(await r.read()) for r in responses]
    assert all(length > 0 for length in lengths)


# -- isolation on the real engine ------------------------------------------------------------


class FaultyEngine(EspeakEngine):
    """The real engine with injected faults keyed on the text, and a thread recorder."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()

    def synthesize(self, items):
        self.threads.add(threading.get_ident())
        if any("POISON" in item.text for item in items):
            raise RuntimeError("the model choked on this input")
        audios = super().synthesize(items)
        return [
            np.full(10, np.nan, dtype=np.float32) if "NAN" in item.text else audio
            for item, audio in zip(items, audios, strict=True)
        ]


async def test_poisoned_request_fails_alone_and_engine_stays_on_one_thread(make_service_client):
    engine = FaultyEngine()
    client = await make_service_client(engine, max_batch_size=8, max_wait_ms=5000)
    texts = [f"Good request {i}." for i in range(6)] + ["POISON pill.", "NAN output."]
    responses = await asyncio.gather(
        *(client.post(SPEECH, json={"input": t, "response_format": "pcm"}) for t in texts)
    )
    statuses = [r.status for r in responses]
    assert statuses == [200] * 6 + [500, 500]
    poison = await assert_error(responses[6], 500, contains="the model choked")
    nan = await assert_error(responses[7], 500, contains="NaN")
    assert poison["code"] == nan["code"] == "engine_error"
    samples = await scrape(client)
    assert metric(samples, "tts_engine_errors_total", code="engine_error") == 2
    # All engine calls (load, warmup, batches, single retries) ran on one thread.
    assert len(engine.threads) == 1 and threading.get_ident() not in engine.threads
    assert (await client.post(SPEECH, json={"input": "after", "response_format": "pcm"})).status == 200


async def wait_until(predicate, timeout: float = 30.0) -> None:
    """Poll a condition on the event loop (a condition wait, not a sleep standing in for one)."""

    async def poll():
        while not predicate():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


async def test_queue_full_is_503_with_retry_after(make_service_client):
    engine = EspeakEngine()
    gate = threading.Event()
    gate.set()
    original = engine.synthesize

    def gated(items):
        assert gate.wait(timeout=30)
        return original(items)

    engine.synthesize = gated  # type: ignore[method-assign]
    client = await make_service_client(engine, max_batch_size=1, max_wait_ms=0, max_queue_size=2)
    service = service_of(client)
    gate.clear()

    def post(text):
        return asyncio.ensure_future(client.post(SPEECH, json={"input": text, "response_format": "pcm"}))

    pending = [post("first")]
    await wait_until(lambda: service.batcher.in_flight == 1)
    pending += [post("second"), post("third")]
    await wait_until(lambda: service.batcher.queue_depth == 2)
    rejected = await client.post(SPEECH, json={"input": "one too many"})
    error = await assert_error(rejected, 503, contains="queue is full")
    assert error["code"] == "queue_full" and rejected.headers["Retry-After"] == "1"
    gate.set()
    assert [r.status for r in await asyncio.gather(*pending)] == [200, 200, 200]
    samples = await scrape(client)
    assert metric(samples, "tts_rejected_total", reason="queue_full") == 1
    # The autoscaler's latency signal holds the three served, not the refusal answered at once.
    assert metric(samples, "tts_synthesis_duration_seconds_count", route=SPEECH) == 3
    assert metric(samples, "tts_request_duration_seconds_count", route=SPEECH) == 4


async def test_deadline_is_504(make_client):
    # One segment (the deadline is per segment): a long text takes eSpeak longer than 0.1 s.
    client = await make_client(request_timeout_s=0.1, segment_chars=4096)
    response = await client.post(
        SPEECH, json={"input": "A long sentence to speak. " * 150, "response_format": "pcm"}
    )
    error = await assert_error(response, 504, contains="deadline")
    assert error["code"] == "deadline_exceeded"


async def test_accelerator_memory_is_exported_after_each_call(make_service_client):
    class OnAnAccelerator(EspeakEngine):
        def device_memory(self):
            return 123_000_000, 456_000_000

    client = await make_service_client(OnAnAccelerator())
    assert (await client.post(SPEECH, json={"input": "hi", "response_format": "pcm"})).status == 200
    samples = await scrape(client)
    assert metric(samples, "tts_cuda_memory_allocated_bytes") == 123_000_000
    assert metric(samples, "tts_cuda_memory_reserved_bytes") == 456_000_000
