"""The service as a process: start-up errors, readiness, and draining on SIGTERM."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from metric_samples import metric_at
from service_process import free_port, running_service


def run_service(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tts_service"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_invalid_setting_fails_with_one_clear_line():
    result = run_service({"TTS_MAX_BATCH_SIZE": "zero"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert (
        "TTS_MAX_BATCH_SIZE" in lines[0] and "'zero'" in lines[0] and "an integer from 1 to 256" in lines[0]
    )


def test_bad_default_voice_fails_start_up():
    result = run_service({"TTS_DEFAULT_VOICE": "robot9000", "TTS_PORT": str(free_port())})
    assert result.returncode == 1
    assert "TTS_DEFAULT_VOICE" in result.stderr and "unknown voice" in result.stderr


def test_console_script_is_installed():
    scripts = os.path.dirname(sys.executable)
    result = subprocess.run(
        [os.path.join(scripts, "kubetts-service")],
        env={**os.environ, "TTS_ENGINE": "nope"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "TTS_ENGINE" in result.stderr


def post_speech(url: str, text: str) -> int:
    return post_speech_answer(url, text)[0]


def post_speech_answer(url: str, text: str) -> tuple[int, str | None]:
    """The status, and the error code of an error answer."""
    request = urllib.request.Request(
        url + "/v1/audio/speech",
        data=json.dumps({"input": text, "response_format": "pcm"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return (response.status if len(response.read()) > 0 else -1), None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["error"]["code"]


def queue_depth(url: str) -> float:
    metrics = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    line = next(line for line in metrics.splitlines() if line.startswith("tts_queue_depth "))
    return float(line.split()[1])


def wait_for_queue_depth(url: str, depth: int, timeout: float = 30.0, above: bool = True) -> bool:
    """Wait until the queue holds at least (``above``) or at most ``depth`` requests."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = queue_depth(url)
        if (current >= depth) if above else (current <= depth):
            return True
        time.sleep(0.01)  # polling a condition, bounded by the deadline
    return False


def wait_for_status(service, path: str, status: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.get(path) == status:
            return True
        time.sleep(0.01)  # polling a condition, bounded by the deadline
    return False


def test_sigterm_finishes_queued_requests_then_exits_zero():
    with running_service(TTS_MAX_BATCH_SIZE="1", TTS_MAX_WAIT_MS="0") as service:
        long_text = "This request takes the engine a while to speak. " * 40
        with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
            futures = [pool.submit(post_speech, service.url, long_text) for _ in range(6)]
            # Wait until the service has accepted all six (one running, five queued).
            assert wait_for_queue_depth(service.url, 5), "requests did not queue up"
            service.proc.send_signal(signal.SIGTERM)
            # Draining: not ready at once, and no new work taken, while the queue still runs.
            assert wait_for_status(service, "/readyz", 503), "readiness did not turn 503"
            # Refused because the service drains, as it says itself (not "not ready", not gone);
            # the six accepted before SIGTERM are all answered below, however far they had got.
            assert post_speech_answer(service.url, "too late") == (503, "draining")
            code = service.stop(timeout=60)
            statuses = [f.result(timeout=60) for f in futures]
        log = service.output()
    assert code == 0, log
    assert statuses == [200] * 6, log
    assert "draining" in log and "stopped" in log


def test_disconnected_client_is_dropped_from_the_queue_and_never_computed():
    # One segment per request: the long one is one engine call that keeps the engine busy.
    with running_service(TTS_MAX_BATCH_SIZE="1", TTS_MAX_WAIT_MS="0", TTS_SEGMENT_CHARS="4096") as service:
        long_text = "This request keeps the engine busy for a while. " * 60
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            busy = pool.submit(post_speech, service.url, long_text)
            assert wait_for_queue_depth_or_inflight(service.url)
            # A raw client that queues a request and hangs up before the answer.
            body = json.dumps({"input": "nobody will listen to this", "response_format": "pcm"}).encode()
            sock = socket.create_connection(("127.0.0.1", service.port), timeout=5)
            sock.sendall(
                b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            assert wait_for_queue_depth(service.url, 1)
            sock.close()
            assert wait_for_queue_depth(service.url, 0, above=False)
            assert busy.result(timeout=60) == 200
        assert post_speech(service.url, "after") == 200
        # Two requests were computed (the busy one and "after"); the abandoned one never was.
        assert metric_at(service.url, "tts_batch_size_sum") == 2


def wait_for_queue_depth_or_inflight(url: str, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric_at(url, "tts_inflight_requests") >= 1 and metric_at(url, "tts_batch_size_count") >= 1:
            return True
        time.sleep(0.01)  # polling a condition, bounded by the deadline
    return False
