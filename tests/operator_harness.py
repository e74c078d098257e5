"""Run the real operator (kopf, in a thread via KopfRunner) against the API double."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import kopf
from kopf.testing import KopfRunner
from kube_api import RunningAPI
from service_process import free_port

TTS = "/apis/kubetts.io/v1alpha1/namespaces/{ns}/ttsservices"
DEPLOYMENTS = "/apis/apps/v1/namespaces/{ns}/deployments"
SERVICES = "/api/v1/namespaces/{ns}/services"
EVENTS = "/api/v1/namespaces/{ns}/events"


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy; return its value (a condition wait, bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def tts_object(name: str, spec: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "kubetts.io/v1alpha1",
        "kind": "TTSService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


class OperatorUnderTest:
    def __init__(self, api: RunningAPI, runner: KopfRunner, webhook_url: str) -> None:
        self.api = api
        self.runner = runner
        self.webhook_url = webhook_url

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

    def events(self, namespace: str = "default") -> list[dict[str, Any]]:
        return (self.api.get(EVENTS.format(ns=namespace)) or {}).get("items", [])

    def event_messages(self, reason: str, namespace: str = "default") -> list[str]:
        return [e.get("message", "") for e in self.events(namespace) if e.get("reason") == reason]


@contextlib.contextmanager
def running_operator(api: RunningAPI, **env: str) -> Iterator[OperatorUnderTest]:
    """The operator's handlers module, freshly imported into a fresh kopf registry."""
    port = free_port()
    settings = {
        "KUBETTS_OPERATOR_API_SERVER": api.url,
        "KUBETTS_OPERATOR_WEBHOOK_HOST": "127.0.0.1",
        "KUBETTS_OPERATOR_WEBHOOK_PORT": str(port),
        "KUBETTS_OPERATOR_AUTOSCALE_INTERVAL_S": "0.5",
        **env,
    }
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    sys.modules.pop("tts_operator.handlers", None)  # re-read config, register into the new registry
    try:
        registry = kopf.OperatorRegistry()
        args = ["run", "--standalone", "--all-namespaces", "--module", "tts_operator.handlers", "--verbose"]
        with KopfRunner(args, registry=registry, timeout=60) as runner:
            wait_for(lambda: _listening(port), what="the webhook receiver")
            yield OperatorUnderTest(api, runner, f"http://127.0.0.1:{port}/alertmanager")
        assert runner.exception is None, runner.output[-5000:]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sys.modules.pop("tts_operator.handlers", None)


def _listening(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False
