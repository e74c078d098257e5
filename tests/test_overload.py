"""Overload at small scale: a burst far beyond the queue gets definite answers, and the
service stays up with bounded memory.  (Full-scale figures: bench/overload.py, quoted in
docs/reliability.md.)"""

from __future__ import annotations

import asyncio
import io
import wave

import aiohttp
from metric_samples import metric, samples_of
from service_process import running_service

BURST = 80
TEXTS = [
    "Short one.",
    "A somewhat longer sentence for the burst.",
    "今天天气很好。",
    "Numbers like 1,234 and 56%.",
]


async def burst(url: str) -> list[tuple[int, dict, bytes]]:
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=BURST)) as session:

        async def one(i: int):
            body = {"input": TEXTS[i % len(TEXTS)], "response_format": "wav"}
            async with session.post(url + "/v1/audio/speech", json=body) as resp:
                return resp.status, dict(resp.headers), await resp.read()

        return await asyncio.gather(*(one(i) for i in range(BURST)))


def test_burst_gets_definite_answers_and_accepted_requests_complete():
    env = dict(
        TTS_MAX_QUEUE_SIZE="8", TTS_MAX_BATCH_SIZE="4", TTS_MAX_WAIT_MS="10", TTS_REQUEST_TIMEOUT_S="20"
    )
    with running_service(**env) as service:
        results = asyncio.run(burst(service.url))
        statuses = [status for status, _, _ in results]
        assert set(statuses) <= {200, 503, 504}, statuses
        served = [(h, body) for status, h, body in results if status == 200]
        rejected = [(h, body) for status, h, body in results if status == 503]
        assert served and rejected  # the queue bound did its job, and work still got done
        for headers, body in rejected:
            assert headers["Retry-After"] == "1" and b'"queue_full"' in body
        for headers, body in served:
            with wave.open(io.BytesIO(body)) as wav:
                seconds = wav.getnframes() / wav.getframerate()
            assert seconds > 0.3 and abs(seconds - float(headers["X-TTS-Audio-Seconds"])) < 0.01
        # Still up, ready, and serving; memory bounded.
        assert service.get("/readyz") == 200
        import urllib.request

        metrics = urllib.request.urlopen(service.url + "/metrics", timeout=5).read().decode()
        samples = samples_of(metrics)
        assert metric(samples, "process_resident_memory_bytes") < 1_000_000_000
        assert metric(samples, "tts_rejected_total", reason="queue_full") == len(rejected)
        assert metric(samples, "tts_queue_depth") == 0
