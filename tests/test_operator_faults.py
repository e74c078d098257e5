"""The operator under API faults: conflicts, 5xx, timeouts and failing watches are retried
with backoff, no duplicate children appear, and the status ends up right."""

from __future__ import annotations

import pytest
from kube_api import RunningAPI
from operator_harness import DEPLOYMENTS, SERVICES, TTS, running_operator, tts_object, wait_for

NS = "default"
FAST_RETRIES = {"KUBETTS_OPERATOR_RETRY_DELAY_S": "0.3", "KUBETTS_OPERATOR_API_TIMEOUT_S": "1"}


@pytest.fixture
def api():
    running = RunningAPI()
    yield running
    running.stop()


def converged(api) -> bool:
    obj = api.get(f"{TTS.format(ns=NS)}/demo") or {}
    status = obj.get("status") or {}
    return bool(
        api.get(f"{DEPLOYMENTS.format(ns=NS)}/demo")
        and api.get(f"{SERVICES.format(ns=NS)}/demo")
        and status.get("endpoint") == "http://demo.default.svc:8080"
        and status.get("observedGeneration") == 1
    )


def assert_single_children(api) -> None:
    for path in (DEPLOYMENTS, SERVICES):
        items = api.get(path.format(ns=NS))["items"]
        assert [i["metadata"]["name"] for i in items] == ["demo"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/deployments", 500),
        ("POST", "/deployments", 503),
        ("POST", "/services", 409),
        ("GET", "/deployments/demo", 500),
        ("PATCH", "/ttsservices/demo/status", 500),
        # No 409 on status patches: merge patches carry no resourceVersion, so a real API server
        # never answers them with a conflict (kopf's own JSON patches with a `test` op can get 422).
        ("PATCH", "/ttsservices/demo", 422),
    ],
)
def test_api_errors_are_retried_until_converged(api, method, path, status):
    with running_operator(api, **FAST_RETRIES):
        fault = api.inject(method, path, status=status, times=2)
        api.create(TTS.format(ns=NS), tts_object("demo", {}))
        wait_for(lambda: converged(api), timeout=45, what="convergence after injected faults")
        assert fault["hits"] == 2  # every injected fault was really hit, and recovered from
        assert_single_children(api)


def test_slow_api_calls_time_out_and_are_retried(api):
    with running_operator(api, **FAST_RETRIES):
        fault = api.inject("GET", "/services/demo", delay=2.0, times=2)
        api.create(TTS.format(ns=NS), tts_object("demo", {}))
        wait_for(lambda: converged(api), timeout=45, what="convergence after timeouts")
        assert fault["hits"] == 2
        assert_single_children(api)


def test_failing_watches_are_reestablished(api):
    fault = api.inject("GET", "/ttsservices", status=500, times=3, watch=True)
    with running_operator(api, **FAST_RETRIES):
        api.create(TTS.format(ns=NS), tts_object("demo", {}))
        wait_for(lambda: converged(api), timeout=45, what="convergence after watch failures")
        assert fault["hits"] >= 1
        assert_single_children(api)


def test_webhook_answers_503_when_the_alert_cannot_be_recorded(api):
    """Alertmanager retries a notification that got a 5xx, so a failed status write must not
    be answered 200 (the alert would be lost)."""
    alert = {
        "status": "firing",
        "labels": {"alertname": "TTSServiceP99LatencyHigh", "tts_namespace": NS, "tts_name": "demo"},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
    }
    payload = {"version": "4", "status": "firing", "receiver": "kubetts", "alerts": [alert]}
    with running_operator(api, **FAST_RETRIES) as op:
        api.create(TTS.format(ns=NS), tts_object("demo", {}))
        wait_for(lambda: converged(api), timeout=45, what="convergence")
        # Only the webhook's own client (not kopf's status writes) meets the fault.
        fault = api.inject(
            "PATCH", "/ttsservices/demo/status", status=500, times=1, agent="kubetts-operator/"
        )
        status, body = op.post_alerts(payload)
        assert status == 503 and "error" in body
        assert fault["hits"] == 1
        assert op.post_alerts(payload) == (200, {"received": 1, "recorded": 1})  # Alertmanager's retry
        recorded = api.get(f"{TTS.format(ns=NS)}/demo")["status"]["autoscaler"]["alert"]
        assert recorded["firing"] is True and recorded["startsAt"] == alert["startsAt"]
