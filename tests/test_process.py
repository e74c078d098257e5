"""The service as a process: start-up errors, readiness, and draining on SIGTERM."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import urllib.request

import time

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
    assert "TTS_MAX_BATCH_SIZE" in lines[0] and "'zero'" in lines[0] and "an integer from 1 to 256" in lines[0]


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
    request = urllib.request.Request(
        url + "/v1/audio/speech",
        data=json.dumps({"input": text, "response_format": "pcm"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status if len(response.read()) > 0 else -1
    except urllib.error.HTTPError as exc:
        return exc.code


def queue_depth(url: str) -> float:
    metrics = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    line = next(line for line in metrics.splitlines() if line.startswith("tts_queue_depth "))
    return float(line.split()[1])


def wait_for_queue_depth(url: str, depth: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if queue_depth(url) >= depth:
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
            code = service.stop(timeout=60)
            statuses = [f.result(timeout=60) for f in futures]
        log = service.output()
    assert code == 0, log
    assert statuses == [200] * 6, log
    assert "draining" in log and "stopped" in log
