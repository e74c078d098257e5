"""``kubetts-say`` against the real service (espeak) on 127.0.0.1: files, pipes, streams, keys,
and the service's own message on every error."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
import wave
from pathlib import Path

import pytest
from service_process import free_port, running_service
from tts_service import audio, say

SAY = [sys.executable, "-m", "tts_service.say"]
KEY = "playground-test-key"


@pytest.fixture(scope="module")
def service():
    with running_service(TTS_ENGINE="espeak") as running:
        yield running


@pytest.fixture(scope="module")
def locked_service():
    with running_service(TTS_ENGINE="espeak", TTS_API_KEYS=KEY) as running:
        yield running


def run_say(*args: str, env: dict[str, str] | None = None, stdin: bytes = b"", stdout=subprocess.PIPE):
    environment = {k: v for k, v in os.environ.items() if k != say.API_KEY_ENV}
    return subprocess.run(
        [*SAY, *args],
        input=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        env={**environment, **(env or {})},
        timeout=120,
    )


def frames(data: bytes) -> int:
    with wave.open(io.BytesIO(data)) as wav:
        assert wav.getframerate() == 24_000 and wav.getnchannels() == 1
        return wav.getnframes()


def test_the_formats_are_the_services():
    assert set(say.FORMATS) == set(audio.FORMATS) and set(say.STREAM_FORMATS) == set(audio.STREAM_FORMATS)


def test_writes_a_wav_file_and_says_what_it_wrote(service, tmp_path):
    out = tmp_path / "hello.wav"
    done = run_say("你好，欢迎使用。 Hello there.", "-o", str(out), "--url", service.url)
    assert done.returncode == 0, done.stderr
    assert frames(out.read_bytes()) > 24_000 // 2  # more than half a second of speech
    report = done.stderr.decode()
    assert f"wrote {out}" in report and "wav" in report and "s of audio" in report
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left beside it


def test_the_format_follows_the_file_name_and_the_text_can_come_from_stdin(service, tmp_path):
    out = tmp_path / "from-stdin.mp3"
    done = run_say("-", "-o", str(out), "--url", service.url, "--speed", "1.5", stdin=b"Read from a pipe.")
    assert done.returncode == 0, done.stderr
    data = out.read_bytes()
    assert data[:3] == b"ID3" or (data[0] == 0xFF and data[1] & 0xE0 == 0xE0)  # an MP3 stream


def test_dash_writes_the_audio_to_a_pipe(service):
    done = run_say("Into a player.", "-o", "-", "--url", service.url, "--voice", "en-us")
    assert done.returncode == 0, done.stderr
    assert frames(done.stdout) > 0 and done.stderr == b""  # stdout is the audio, nothing else


def test_stream_writes_pcm_as_it_arrives(service):
    done = run_say("Streaming, chunk by chunk.", "--stream", "--format", "pcm", "--url", service.url)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout) > 0 and len(done.stdout) % 2 == 0  # 16-bit samples


def test_a_bad_request_exits_non_zero_with_the_services_message_and_writes_nothing(service, tmp_path):
    out = tmp_path / "never.wav"
    done = run_say("hello", "-o", str(out), "--url", service.url, "--voice", "nobody-at-all")
    assert done.returncode == say.EXIT_SERVICE_ERROR
    message = done.stderr.decode()
    assert (
        message.startswith("kubetts-say: ")
        and "nobody-at-all" in message
        and "HTTP 400 unknown_voice" in message
    )
    assert not out.exists() and list(tmp_path.iterdir()) == []

    done = run_say("hello", "--speed", "9", "--url", service.url)
    assert done.returncode == say.EXIT_SERVICE_ERROR and "speed" in done.stderr.decode()


def test_a_key_is_sent_from_tts_api_key(locked_service, tmp_path):
    refused = run_say("hello", "-o", str(tmp_path / "a.wav"), "--url", locked_service.url)
    assert refused.returncode == say.EXIT_SERVICE_ERROR and "requires an API key" in refused.stderr.decode()
    done = run_say(
        "hello", "-o", str(tmp_path / "b.wav"), "--url", locked_service.url, env={say.API_KEY_ENV: KEY}
    )
    assert done.returncode == 0, done.stderr
    wrong = run_say("hello", "--url", locked_service.url, "--api-key", "not-it")
    assert wrong.returncode == say.EXIT_SERVICE_ERROR and "not valid" in wrong.stderr.decode()


def test_an_unreachable_service_and_a_terminal_are_clear_errors(service):
    gone = run_say("hello", "--url", f"http://127.0.0.1:{free_port()}")
    assert gone.returncode == say.EXIT_UNREACHABLE and "cannot reach the service" in gone.stderr.decode()

    leader, follower = pty.openpty()  # stdout is a terminal: binary audio is not written to it
    try:
        done = run_say("hello", "--url", service.url, stdout=follower)
    finally:
        os.close(follower)
        os.close(leader)
    assert done.returncode == say.EXIT_USAGE and "stdout is a terminal" in done.stderr.decode()


def test_the_console_script_is_installed():
    script = Path(sys.executable).parent / "kubetts-say"
    assert script.exists(), "pyproject.toml's [project.scripts] names kubetts-say"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "--stream" in done.stdout and say.API_KEY_ENV in done.stdout
