"""The service end to end with TTS_ENGINE=chattts on the random-weights checkpoint, over HTTP."""

from __future__ import annotations

import concurrent.futures
import io
import json
import signal
import urllib.request
import wave

import pytest
from chattts_checkpoint import build_checkpoint
from metric_samples import metric_at, samples_of
from service_process import ServiceProcess, running_service
from test_process import post_speech, post_speech_answer, wait_for_queue_depth, wait_for_status


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


def shared_engine_work(url: str, before: dict[str, float]) -> bool:
    """Whether the requests since ``before`` shared engine work: fewer engine calls than
    requests (request-level batches), or token steps with more than one row (continuous)."""
    calls = metric_at(url, "tts_batch_size_count") - before["tts_batch_size_count"]
    rows = metric_at(url, "tts_batch_size_sum") - before["tts_batch_size_sum"]
    return rows > calls


def batch_metrics(url: str) -> dict[str, float]:
    return {name: metric_at(url, name) for name in ("tts_batch_size_count", "tts_batch_size_sum")}


@pytest.mark.parametrize("scheduler", ["request", "continuous"])
def test_chattts_service_over_http(checkpoint, scheduler):
    with running_service(**env_for(checkpoint, TTS_SCHEDULER=scheduler)) as service:
        # Ready only after load and warmup, both timed and exported.
        assert metric_at(service.url, "tts_model_load_seconds") > 0
        assert metric_at(service.url, "tts_warmup_seconds") > 0
        # Each start-up phase is exported; only the scheduler's own path was warmed up.
        phases = {
            labels[0][1]
            for name, labels in samples_of(urllib.request.urlopen(service.url + "/metrics").read().decode())
            if name == "tts_startup_phase_seconds"
        }
        assert {"imports", "weight_verification", "module_construction", "weight_loading"} <= phases
        warmed = {"warmup_decode_loop"} if scheduler == "continuous" else {"warmup_generation"}
        assert {p for p in phases if p.startswith("warmup_")} == warmed

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

        # Concurrent requests with the same voice share engine calls (request-level batches,
        # or token steps of the continuous scheduler).
        before = batch_metrics(service.url)
        admitted_before = metric_at(service.url, "tts_step_admitted_rows_sum")
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            results = list(
                pool.map(
                    lambda t: post(service.url, "/v1/audio/speech", {"input": t, "response_format": "pcm"}),
                    ["你好", "再见", "谢谢", "早上好"],
                )
            )
        assert [r[0] for r in results] == [200] * 4
        assert shared_engine_work(service.url, before)
        admitted = metric_at(service.url, "tts_step_admitted_rows_sum") - admitted_before
        assert admitted == (4 if scheduler == "continuous" else 0)  # one row per segment

        # Streamed requests: chunked audio, batched with each other, time to first audio measured.
        before = batch_metrics(service.url)
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
        assert shared_engine_work(service.url, before)
        assert metric_at(service.url, "tts_time_to_first_audio_seconds_count") == 3
    log = service.output()
    assert log.index("warmed up") < log.index(f"ready: engine=chattts scheduler={scheduler}")


def test_missing_model_fails_start_up_with_one_clear_line(checkpoint, tmp_path):
    service = ServiceProcess(env_for(checkpoint, TTS_MODEL_DIR=str(tmp_path / "missing")))
    code = service.proc.wait(timeout=120)
    log = service.output()
    assert code == 1, log
    assert "no such directory" in log and "Traceback" not in log


def test_sigterm_drains_the_continuous_schedulers_rows_and_queue(checkpoint):
    """Draining on SIGTERM with rows mid-generation: the active rows finish, the queued requests
    are admitted and finish, a late request is 503 draining, the process exits 0."""
    env = env_for(
        checkpoint,
        TTS_SCHEDULER="continuous",
        TTS_MAX_BATCH_SIZE="2",
        TTS_MAX_NEW_TOKENS="400",
        TTS_MIN_NEW_TOKENS="400",  # every row runs to its budget: long enough to drain mid-way
    )
    with running_service(**env) as service:
        texts = ["今天天气很好，我们一起去公园散步吧。", "你好", "谢谢你", "早上好", "再见"]
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(texts)) as pool:
            futures = [pool.submit(post_speech, service.url, t) for t in texts]
            assert wait_for_queue_depth(service.url, 3), "requests did not queue up"  # 2 rows + 3 waiting
            service.proc.send_signal(signal.SIGTERM)
            assert wait_for_status(service, "/readyz", 503), "readiness did not turn 503"
            assert post_speech_answer(service.url, "太晚了") == (503, "draining")
            code = service.stop(timeout=120)
            statuses = [f.result(timeout=120) for f in futures]
        log = service.output()
    assert code == 0, log
    assert statuses == [200] * len(texts), log
    assert "draining" in log and "stopped" in log
