"""The service end to end with TTS_ENGINE=chattts on the random-weights checkpoint, over HTTP."""

from __future__ import annotations

import concurrent.futures
import io
import json
import re
import urllib.request
import wave

import pytest
from chattts_checkpoint import build_checkpoint
from service_process import ServiceProcess, running_service


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("chattts-http"))


def env_for(checkpoint, **extra) -> dict[str, str]:
    return {
        "TTS_ENGINE": "chattts",
        "TTS_MODEL_DIR": str(checkpoint["asset"]),
        "TTS_CHATTTS_CONFIG": str(checkpoint["config"]),
        "TTS_MODEL_VERIFY": "false",  # random weights: their own hashes, not the official ones
        "TTS_TORCH_THREADS": "1",
        "TTS_MAX_NEW_TOKENS": "48",
        "TTS_MAX_BATCH_SIZE": "4",
        "TTS_MAX_WAIT_MS": "200",
        **extra,
    }


def post(url: str, path: str, body: dict) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(
        url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, name
    return float(match.group(1))


def test_chattts_service_over_http(checkpoint):
    with running_service(**env_for(checkpoint)) as service:
        # Ready only after load and warmup, both timed and exported.
        assert metric(service.url, "tts_model_load_seconds") > 0
        assert metric(service.url, "tts_warmup_seconds") > 0

        status, headers, body = post(
            service.url,
            "/v1/audio/speech",
            {"input": "今天是2024年5月1日", "voice": "alloy", "response_format": "wav"},
        )
        assert status == 200, body
        assert headers["X-TTS-Engine"] == "chattts" and headers["X-TTS-Voice"].startswith("seed-")
        with wave.open(io.BytesIO(body)) as wav:
            assert wav.getframerate() == 24_000 and wav.getnchannels() == 1 and wav.getnframes() > 0

        status, headers, body = post(service.url, "/tts", {"text": "hello", "voice": "seed-1111"})
        assert status == 200 and headers["X-TTS-Voice"] == "seed-1111"

        voices = json.loads(urllib.request.urlopen(service.url + "/v1/voices", timeout=10).read())
        assert "seed-2222" in json.dumps(voices)

        status, _, body = post(service.url, "/v1/audio/speech", {"input": "hi", "voice": "nobody"})
        assert status == 400 and json.loads(body)["error"]["code"] == "unknown_voice"

        # Concurrent requests with the same voice share engine calls.
        batches_before = metric(service.url, "tts_batch_size_count")
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            results = list(
                pool.map(
                    lambda t: post(service.url, "/v1/audio/speech", {"input": t, "response_format": "pcm"}),
                    ["你好", "再见", "谢谢", "早上好"],
                )
            )
        assert [r[0] for r in results] == [200] * 4
        assert metric(service.url, "tts_batch_size_count") - batches_before < 4

        # Streamed requests: chunked audio, batched with each other, time to first audio measured.
        batches_before = metric(service.url, "tts_batch_size_count")
        with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
            streams = list(
                pool.map(
                    lambda t: post(
                        service.url,
                        "/v1/audio/speech",
                        {"input": t, "response_format": "pcm", "stream": True},
                    ),
                    ["你好", "再见", "谢谢"],
                )
            )
        assert [s[0] for s in streams] == [200] * 3
        assert all(s[1].get("Transfer-Encoding") == "chunked" and len(s[2]) > 0 for s in streams)
        assert metric(service.url, "tts_batch_size_count") - batches_before < 3
        assert metric(service.url, "tts_time_to_first_audio_seconds_count") == 3
    log = service.output()
    assert log.index("warmed up") < log.index("ready: engine=chattts")


def test_missing_model_fails_start_up_with_one_clear_line(checkpoint, tmp_path):
    service = ServiceProcess(env_for(checkpoint, TTS_MODEL_DIR=str(tmp_path / "missing")))
    code = service.proc.wait(timeout=120)
    log = service.output()
    assert code == 1, log
    assert "no such directory" in log and "Traceback" not in log
