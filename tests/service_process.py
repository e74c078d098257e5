"""Run the real service as a subprocess on 127.0.0.1 for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
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
        out, _ = self.proc.communicate(timeout=30)
        return out

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
