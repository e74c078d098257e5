"""The operator under API faults a real API server cannot be made to produce on demand -- 5xx,
429s, timeouts, failing watches, 422 on kopf's own patches -- so these run against the API
double (tests/kube_api.py), with the real ``kubetts-operator`` process: they are retried with
backoff, no duplicate children appear, and the status ends up right."""

from __future__ import annotations

import contextlib

import pytest
from kube_api import RunningAPI
from operator_harness import OperatorProcess, tts_object, wait_for
from tts_operator.promql import HIGH_ALERT

NS = "default"
TTS = "/apis/kubetts.io/v1alpha1/namespaces/{ns}/ttsservices"
DEPLOYMENTS = "/apis/apps/v1/namespaces/{ns}/deployments"
SERVICES = "/api/v1/namespaces/{ns}/services"
TOKEN = "faults"
FAST_RETRIES = {
    "KUBETTS_OPERATOR_RETRY_DELAY_S": "0.3",
    "KUBETTS_OPERATOR_API_TIMEOUT_S": "1",
    "KUBETTS_OPERATOR_WEBHOOK_TOKEN": TOKEN,
}


@contextlib.contextmanager
def running_operator(api, tmp_path):
    """The real operator process against the double (no leases there: one replica, no election)."""
    operator = OperatorProcess(
        tmp_path,
        kubeconfig=api.kubeconfig(tmp_path / "kubeconfig"),
        args=("--no-leader-election",),
        env=FAST_RETRIES,
    )
    try:
        operator.wait_leading()
        yield operator
    finally:
        code = operator.stop()
    assert code == 0, operator.log()[-5000:]


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
    ("method", "path", "status", "times"),
    [
        ("PATCH", "/deployments/demo", 500, 2),  # the server-side apply
        ("PATCH", "/deployments/demo", 503, 2),
        ("PATCH", "/services/demo", 429, 2),  # API priority and fairness sheds load
        ("GET", "/deployments/demo", 500, 2),  # first sight of a child
        ("GET", "/ttsservices/demo", 500, 2),  # the fresh read under the lock
        ("PATCH", "/ttsservices/demo/status", 500, 2),
        # No 409 on status patches: merge patches carry no resourceVersion, so a real API server
        # never answers them with a conflict. kopf's own patch of its annotations can get a 422; kopf
        # does not send it again (docs/reliability.md), and the operator converges without it.
        ("PATCH", "/ttsservices/demo", 422, 1),
    ],
)
def test_api_errors_are_retried_until_converged(api, tmp_path, method, path, status, times):
    with running_operator(api, tmp_path):
        fault = api.inject(method, path, status=status, times=times)
        api.create(TTS.format(ns=NS), tts_object("demo", {}))
        wait_for(lambda: converged(api), timeout=45, what="convergence after injected faults")
        assert fault["hits"] == times  # every injected fault was really hit, and recovered from
        assert_single_children(api)


def test_slow_api_calls_time_out_and_are_retried(api, tmp_path):
    with running_operator(api, tmp_path):
        fault = api.inject("GET", "/services/demo", delay=2.0, times=2)
        api.create(TTS.format(ns=NS), tts_object("demo", {}))
        wait_for(lambda: converged(api), timeout=45, what="convergence after timeouts")
        assert fault["hits"] == 2
        assert_single_children(api)


def test_failing_watches_are_reestablished(api, tmp_path):
    fault = api.inject("GET", "/ttsservices", status=500, times=3, watch=True)
    with running_operator(api, tmp_path):
        api.create(TTS.format(ns=NS), tts_object("demo", {}))
        wait_for(lambda: converged(api), timeout=45, what="convergence after watch failures")
        assert fault["hits"] >= 1
        assert_single_children(api)


def test_webhook_answers_503_when_the_alert_cannot_be_recorded(api, tmp_path):
    """Alertmanager retries a notification that got a 5xx, so a failed status write must not
    be answered 200 (the alert would be lost)."""
    alert = {
        "status": "firing",
        "labels": {"alertname": HIGH_ALERT, "namespace": NS, "tts_namespace": NS, "tts_name": "demo"},
        "annotations": {"demand": "2"},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
    }
    payload = {"version": "4", "status": "firing", "receiver": "kubetts", "alerts": [alert]}
    with running_operator(api, tmp_path) as op:
        api.create(TTS.format(ns=NS), tts_object("demo", {}))
        wait_for(lambda: converged(api), timeout=45, what="convergence")
        # Converged, the operator writes no status any more: the webhook's write meets the fault.
        fault = api.inject(
            "PATCH", "/ttsservices/demo/status", status=500, times=1, agent="kubetts-operator/"
        )
        status, body = op.post_alerts(payload, token=TOKEN)
        assert status == 503 and "error" in body
        assert fault["hits"] == 1
        # Alertmanager's retry
        assert op.post_alerts(payload, token=TOKEN) == (200, {"received": 1, "recorded": 1, "ignored": []})
        recorded = api.get(f"{TTS.format(ns=NS)}/demo")["status"]["autoscaler"]["alerts"][HIGH_ALERT]
        assert recorded["firing"] is True and recorded["startsAt"] == alert["startsAt"]
