"""Run the real operator as users run it: the ``kubetts-operator`` command, credentials from a kubeconfig.

Used against the real control plane (``tests/control_plane.py``) and, for faults a real API
server cannot be made to produce, against the API double (``tests/kube_api.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from service_process import free_port

OPERATOR = str(Path(sys.executable).parent / "kubetts-operator")
# Fast loops for tests: resync every second, leader election in seconds, quick backoffs.
FAST = {
    "KUBETTS_OPERATOR_AUTOSCALE_INTERVAL_S": "1",
    "KUBETTS_OPERATOR_RETRY_DELAY_S": "1",
    "KUBETTS_OPERATOR_PERMANENT_RETRY_S": "3",
    "KUBETTS_OPERATOR_LEASE_DURATION_S": "4",
    "KUBETTS_OPERATOR_LEASE_RENEW_DEADLINE_S": "3",
    "KUBETTS_OPERATOR_LEASE_RETRY_PERIOD_S": "0.5",
}
# What must not leak from the test's own environment into the operator's.
_CREDENTIAL_ENV = (
    "KUBECONFIG",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "POD_NAMESPACE",
    "POD_NAME",
)


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy; return its value (a condition wait, bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def tts_object(name: str, spec: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "kubetts.io/v1alpha1",
        "kind": "TTSService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


class OperatorProcess:
    """One ``kubetts-operator`` process; its webhook (served by the leader only) on 127.0.0.1."""

    def __init__(
        self,
        workdir: Path,
        *,
        kubeconfig: Path | None,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        name: str = "operator",
        command: tuple[str, ...] = (OPERATOR,),
    ) -> None:
        self.port = free_port()
        self.log_path = workdir / f"{name}-{self.port}.log"
        full_env = {
            k: v
            for k, v in os.environ.items()
            if k not in _CREDENTIAL_ENV and not k.startswith("KUBETTS_OPERATOR_")
        }
        full_env.update(FAST)
        full_env.update(
            {"KUBETTS_OPERATOR_WEBHOOK_HOST": "127.0.0.1", "KUBETTS_OPERATOR_WEBHOOK_PORT": str(self.port)}
        )
        if kubeconfig is not None:
            full_env["KUBECONFIG"] = str(kubeconfig)
        full_env.update(env or {})
        self._log = open(self.log_path, "w")  # noqa: SIM115 -- closed in stop()
        self.process = subprocess.Popen(
            [*command, "--verbose", *args], env=full_env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.webhook_url = f"http://127.0.0.1:{self.port}/alertmanager"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def leading(self) -> bool:
        """Only the leader runs kopf and serves the webhook."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def wait_leading(self, timeout: float = 60.0) -> OperatorProcess:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the operator exited with {self.process.returncode}:\n{self.log()[-5000:]}"
                )
            return self.leading

        wait_for(ready, timeout=timeout, what="the operator to lead and serve its webhook")
        return self

    def post_alerts(self, payload: Any, token: str | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.webhook_url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def kill(self) -> None:
        """Die as a crashed or evicted pod does: no clean-up, the Lease left to expire."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._log.close()
        return code


@contextlib.contextmanager
def running_operator(
    workdir: Path, *, kubeconfig: Path | None, wait: bool = True, **options: Any
) -> Iterator[OperatorProcess]:
    """A leading operator for the block; it must stop cleanly (exit 0) at the end."""
    operator = OperatorProcess(workdir, kubeconfig=kubeconfig, **options)
    try:
        if wait:
            operator.wait_leading()
        yield operator
    finally:
        code = operator.stop()
    assert code == 0, f"the operator exited with {code}:\n{operator.log()[-5000:]}"
    assert "Traceback" not in operator.log(), operator.log()[-5000:]
