"""Run the real service as a subprocess on 127.0.0.1 for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        full_env = {**os.environ, "TTS_HOST": "127.0.0.1", "TTS_PORT": str(self.port), **env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tts_service"],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        # The log is read as it is written: a pipe nobody reads fills up (64 KiB), and the
        # service then blocks in its next log call -- a hang that looks like the service's own.
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()

    def _read_log(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)

    def get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if self.get("/readyz") == 200:
                    return
            except OSError:
                pass  # not listening yet
            time.sleep(0.05)
        raise TimeoutError("service did not become ready")

    def output(self) -> str:
        """Everything the process logged, once it has exited (waits up to 30 s for that)."""
        self.proc.wait(timeout=30)
        self._reader.join(timeout=30)
        return "".join(self._lines)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@contextmanager
def running_service(**env: str):
    service = ServiceProcess(env)
    try:
        service.wait_ready()
        yield service
    finally:
        if service.proc.poll() is None:
            service.stop()
