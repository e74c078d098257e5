"""The autoscaler and its inputs on a real control plane: the Alertmanager webhook (validated,
token-checked, stale alerts ignored), poll mode without a Prometheus, and the monitoring objects
(ServiceMonitor, PrometheusRule) written into an API server that has prometheus-operator's CRDs and
validates them.

One operator for the module, with a webhook token and a short alert stale time; the replica
count it decides is what the Deployment in the cluster gets.
"""

from __future__ import annotations

import pytest
from kube_cluster import condition, tts
from operator_harness import running_operator, tts_object, wait_for

TOKEN = "s3cret"
STALE_S = 4


@pytest.fixture(scope="module")
def operator(cluster, tmp_path_factory):
    env = {"KUBETTS_OPERATOR_WEBHOOK_TOKEN": TOKEN, "KUBETTS_OPERATOR_ALERT_STALE_S": str(STALE_S)}
    with running_operator(
        tmp_path_factory.mktemp("operator"), kubeconfig=cluster.operator_kubeconfig, env=env
    ) as op:
        yield op


@pytest.fixture
def ns(cluster, operator):
    return cluster.namespace("scale")


def alert(
    ns: str,
    status: str,
    name: str = "demo",
    starts: str = "2026-01-01T00:00:00Z",
    ends: str = "0001-01-01T00:00:00Z",
):
    return {
        "status": status,
        "labels": {"alertname": "TTSServiceP99LatencyHigh", "tts_namespace": ns, "tts_name": name},
        "startsAt": starts,
        "endsAt": ends,
    }


def payload(*alerts):
    return {"version": "4", "status": alerts[0]["status"], "receiver": "kubetts", "alerts": list(alerts)}


def autoscaled(**overrides) -> dict:
    return {
        "replicas": 1,
        "autoscaling": {
            "enabled": True, "minReplicas": 1, "maxReplicas": 3, "mode": "alerts",
            "cooldownSeconds": 0, "scaleDownStabilizationSeconds": 2, **overrides,
        },
    }  # fmt: skip


def replicas(cluster, ns) -> int:
    return cluster.plane.get("deployment", "demo", "-n", ns)["spec"]["replicas"]


def test_the_webhook_checks_its_token_and_validates_payloads(cluster, operator, ns):
    assert operator.post_alerts(payload(alert(ns, "firing")))[0] == 401
    assert operator.post_alerts(payload(alert(ns, "firing")), token="wrong")[0] == 401
    assert operator.post_alerts({"alerts": "nope"}, token=TOKEN)[0] == 400
    assert operator.post_alerts({"alerts": [{"status": "weird", "labels": {}}]}, token=TOKEN)[0] == 400
    status, body = operator.post_alerts(payload(alert(ns, "firing", name="not-ours")), token=TOKEN)
    assert status == 200 and body["recorded"] == 0
    other = {**alert(ns, "firing"), "labels": {"alertname": "SomethingElse"}}
    assert operator.post_alerts(payload(other), token=TOKEN)[1]["received"] == 0


def test_a_firing_alert_scales_out_and_its_resolution_scales_back_in(cluster, operator, ns):
    cluster.plane.apply(tts_object("demo", autoscaled(), ns))
    wait_for(lambda: cluster.plane.get("deployment", "demo", "-n", ns), what="the Deployment")
    # No alert yet: no signal, no scaling, and a condition says why.
    wait_for(
        lambda: (c := condition(tts(cluster, "demo", ns), "MetricsAvailable")) and c["status"] == "False",
        what="NoData",
    )
    assert replicas(cluster, ns) == 1
    assert operator.post_alerts(payload(alert(ns, "firing")), token=TOKEN)[0] == 200
    wait_for(lambda: replicas(cluster, ns) == 3, what="scale-out to maxReplicas")
    status = tts(cluster, "demo", ns)["status"]
    assert (
        status["autoscaler"]["desiredReplicas"] == 3
        and "scaled out" in status["autoscaler"]["lastScaleReason"]
    )
    wait_for(lambda: tts(cluster, "demo", ns)["status"].get("readyReplicas") == 3, what="three ready pods")
    assert any(
        "scaled out" in e["message"]
        for e in cluster.plane.get("events", "-n", ns)["items"]
        if e["reason"] == "Scaled"
    )
    # An older (out-of-order) resolved notification is ignored ...
    old = alert(ns, "resolved", starts="2025-12-31T00:00:00Z", ends="2025-12-31T00:10:00Z")
    operator.post_alerts(payload(old), token=TOKEN)
    assert tts(cluster, "demo", ns)["status"]["autoscaler"]["alert"]["firing"] is True
    # ... the real one scales back in after the stabilization window.
    operator.post_alerts(payload(alert(ns, "resolved", ends="2026-01-01T00:05:00Z")), token=TOKEN)
    wait_for(lambda: replicas(cluster, ns) == 1, timeout=60, what="scale-in to minReplicas")
    assert "scaled in" in tts(cluster, "demo", ns)["status"]["autoscaler"]["lastScaleReason"]


def test_a_firing_alert_alertmanager_stops_confirming_goes_stale(cluster, operator, ns):
    cluster.plane.apply(tts_object("demo", autoscaled(cooldownSeconds=3600), ns))
    wait_for(lambda: cluster.plane.get("deployment", "demo", "-n", ns), what="the Deployment")
    operator.post_alerts(payload(alert(ns, "firing")), token=TOKEN)
    wait_for(lambda: replicas(cluster, ns) == 2, what="one scale-out step")
    first = tts(cluster, "demo", ns)["status"]["autoscaler"]["alert"]["receivedAt"]
    operator.post_alerts(payload(alert(ns, "firing")), token=TOKEN)  # a re-notification refreshes it
    wait_for(
        lambda: tts(cluster, "demo", ns)["status"]["autoscaler"]["alert"]["receivedAt"] > first,
        what="refresh",
    )
    cond = wait_for(
        lambda: (
            (c := condition(tts(cluster, "demo", ns), "MetricsAvailable")) and c["status"] == "False" and c
        ),
        timeout=30,
        what="the stale alert to count as no data",
    )
    assert "last confirmed" in cond["message"]
    assert replicas(cluster, ns) == 2


def test_poll_mode_without_prometheus_does_not_scale_and_says_why(cluster, operator, ns):
    spec = autoscaled(mode="poll", prometheusURL="http://127.0.0.1:9")
    cluster.plane.apply(tts_object("demo", spec, ns))
    cond = wait_for(
        lambda: (
            (c := condition(tts(cluster, "demo", ns), "MetricsAvailable")) and c["status"] == "False" and c
        ),
        what="MetricsAvailable=False",
    )
    assert "Prometheus unreachable" in cond["message"]
    assert replicas(cluster, ns) == 1


def test_monitoring_objects_are_valid_prometheus_operator_objects(cluster, operator, ns):
    """The API server has prometheus-operator's CRDs (from its Go module) and validates each object."""
    cluster.plane.apply(tts_object("demo", {"autoscaling": {"p99TargetSeconds": 0.8}}, ns))
    monitor = wait_for(
        lambda: cluster.plane.get("servicemonitor", "demo", "-n", ns), what="the ServiceMonitor"
    )
    rule = wait_for(lambda: cluster.plane.get("prometheusrule", "demo", "-n", ns), what="the PrometheusRule")
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    expr = rule["spec"]["groups"][0]["rules"][0]["expr"]
    assert expr.endswith("> 0.8") and 'service="demo"' in expr and f'namespace="{ns}"' in expr
    for child in (monitor, rule):
        assert child["metadata"]["ownerReferences"][0]["name"] == "demo"
    # A change reaches them too.
    cluster.patch_tts("demo", ns, {"spec": {"autoscaling": {"p99TargetSeconds": 0.7}}})
    wait_for(
        lambda: cluster.plane.get("prometheusrule", "demo", "-n", ns)["spec"]["groups"][0]["rules"][0]["expr"].endswith("> 0.7"),
        what="the PrometheusRule update",
    )  # fmt: skip
