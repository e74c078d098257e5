"""The real kopf operator against the Kubernetes API double: reconcile, repair, status, scaling."""

from __future__ import annotations

import pytest
from kube_api import RunningAPI
from operator_harness import DEPLOYMENTS, SERVICES, TTS, running_operator, tts_object, wait_for
from tts_service.settings import Settings

NS = "default"


@pytest.fixture
def api():
    running = RunningAPI()
    yield running
    running.stop()


def deployment(api, name="demo"):
    return api.get(f"{DEPLOYMENTS.format(ns=NS)}/{name}")


def tts(api, name="demo"):
    return api.get(f"{TTS.format(ns=NS)}/{name}")


def env_of(dep) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


def condition(obj, kind):
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == kind), None)


def test_create_builds_children_and_writes_status(api):
    with running_operator(api) as op:
        created = api.create(TTS.format(ns=NS), tts_object("demo", {"batching": {"maxBatchSize": 4}}))
        dep = wait_for(lambda: deployment(api), what="the Deployment")
        svc = wait_for(lambda: api.get(f"{SERVICES.format(ns=NS)}/demo"), what="the Service")
        for child in (dep, svc):
            (owner,) = child["metadata"]["ownerReferences"]
            assert owner["uid"] == created["metadata"]["uid"] and owner["kind"] == "TTSService"
            assert owner["controller"] is True
        settings = Settings.from_env({k: v for k, v in env_of(dep).items() if k.startswith("TTS_")})
        assert settings.max_batch_size == 4 and settings.engine == "espeak" and settings.host == "0.0.0.0"
        assert dep["spec"]["replicas"] == 1
        container = dep["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert svc["spec"]["ports"][0]["name"] == "http"
        obj = wait_for(lambda: (o := tts(api)) and o.get("status", {}).get("endpoint") and o, what="status")
        assert obj["status"]["endpoint"] == "http://demo.default.svc:8080"
        assert obj["status"]["observedGeneration"] == 1 and obj["status"]["phase"] == "Pending"
        assert (
            condition(obj, "Ready")["status"] == "False" and condition(obj, "Degraded")["status"] == "False"
        )
        messages = wait_for(lambda: op.event_messages("Reconciled"), what="events")
        assert "created Deployment/demo" in messages and "created Service/demo" in messages
        # No monitoring CRDs in this cluster: no ServiceMonitor was attempted.
        assert all("ServiceMonitor" not in m for m in messages)


def test_ready_replicas_make_it_running(api):
    with running_operator(api):
        api.create(TTS.format(ns=NS), tts_object("demo", {}))
        wait_for(lambda: deployment(api), what="the Deployment")
        # What the Deployment controller would do once a pod is ready.
        api.request(
            "PATCH",
            f"{DEPLOYMENTS.format(ns=NS)}/demo/status",
            {"status": {"replicas": 1, "readyReplicas": 1}},
            "application/merge-patch+json",
        )
        obj = wait_for(
            lambda: (o := tts(api)) and (o.get("status") or {}).get("phase") == "Running" and o,
            what="Running",
        )
        assert obj["status"]["readyReplicas"] == 1 and condition(obj, "Ready")["status"] == "True"


def test_spec_update_patches_children(api):
    with running_operator(api):
        api.create(TTS.format(ns=NS), tts_object("demo", {}))
        wait_for(lambda: deployment(api), what="the Deployment")
        api.patch(f"{TTS.format(ns=NS)}/demo", {"spec": {"batching": {"maxWaitMs": 5}, "replicas": 3}})
        dep = wait_for(
            lambda: (d := deployment(api)) and env_of(d)["TTS_MAX_WAIT_MS"] == "5" and d, what="patch"
        )
        assert dep["spec"]["replicas"] == 3
        wait_for(
            lambda: (tts(api).get("status") or {}).get("observedGeneration") == 2, what="observedGeneration 2"
        )


def test_deleted_and_edited_children_are_put_back(api):
    with running_operator(api) as op:
        api.create(TTS.format(ns=NS), tts_object("demo", {}))
        first = wait_for(lambda: deployment(api), what="the Deployment")
        assert api.delete(f"{DEPLOYMENTS.format(ns=NS)}/demo") == 200
        recreated = wait_for(
            lambda: (d := deployment(api)) and d["metadata"]["uid"] != first["metadata"]["uid"] and d,
            what="the Deployment to be recreated",
        )
        assert env_of(recreated) == env_of(first)
        api.patch(f"{SERVICES.format(ns=NS)}/demo", {"spec": {"type": "NodePort"}})
        wait_for(
            lambda: api.get(f"{SERVICES.format(ns=NS)}/demo")["spec"]["type"] == "ClusterIP", what="repair"
        )
        wait_for(
            lambda: any(
                "Service/demo" in m
                for m in op.event_messages("Repaired") + op.event_messages("Reconciled")
                if m.startswith("updated")
            ),
            what="a repair event",
        )


def test_invalid_spec_is_degraded_with_an_event_and_the_operator_survives(api):
    with running_operator(api) as op:
        # The API double, unlike a real API server, does not enforce the CRD's CEL rules.
        api.create(
            TTS.format(ns=NS), tts_object("bad", {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}})
        )
        obj = wait_for(
            lambda: (o := tts(api, "bad")) and o.get("status", {}).get("phase") == "Degraded" and o,
            what="Degraded",
        )
        degraded = condition(obj, "Degraded")
        assert degraded["status"] == "True" and degraded["reason"] == "InvalidSpec"
        assert "maxReplicas must be >= autoscaling.minReplicas" in degraded["message"]
        warnings = wait_for(lambda: op.event_messages("InvalidSpec"), what="a Warning event")
        assert "maxReplicas" in warnings[0]
        assert deployment(api, "bad") is None
        # A valid object is still served, and fixing the bad one heals it.
        api.create(TTS.format(ns=NS), tts_object("good", {}))
        wait_for(lambda: deployment(api, "good"), what="the good Deployment")
        api.patch(f"{TTS.format(ns=NS)}/bad", {"spec": {"autoscaling": {"minReplicas": 1}}})
        wait_for(lambda: deployment(api, "bad"), what="the healed Deployment")
        wait_for(lambda: condition(tts(api, "bad"), "Degraded")["status"] == "False", what="Degraded=False")
        assert len(op.event_messages("InvalidSpec")) == 1  # not repeated on every resync


def test_monitoring_objects_when_the_cluster_has_prometheus_operator():
    api = RunningAPI(monitoring=True)
    try:
        with running_operator(api):
            api.create(TTS.format(ns=NS), tts_object("demo", {"autoscaling": {"p99TargetSeconds": 0.8}}))
            monitor = wait_for(
                lambda: api.get(f"/apis/monitoring.coreos.com/v1/namespaces/{NS}/servicemonitors/demo"),
                what="the ServiceMonitor",
            )
            rule = wait_for(
                lambda: api.get(f"/apis/monitoring.coreos.com/v1/namespaces/{NS}/prometheusrules/demo"),
                what="the PrometheusRule",
            )
            assert monitor["spec"]["endpoints"][0]["port"] == "http"
            expr = rule["spec"]["groups"][0]["rules"][0]["expr"]
            assert expr.endswith("> 0.8") and 'service="demo"' in expr
    finally:
        api.stop()


def alert(
    status: str, name: str = "demo", starts: str = "2026-01-01T00:00:00Z", ends: str = "0001-01-01T00:00:00Z"
):
    return {
        "status": status,
        "labels": {"alertname": "TTSServiceP99LatencyHigh", "tts_namespace": NS, "tts_name": name},
        "startsAt": starts,
        "endsAt": ends,
    }


def webhook_payload(*alerts):
    return {"version": "4", "status": alerts[0]["status"], "receiver": "kubetts", "alerts": list(alerts)}


AUTOSCALED = {
    "replicas": 1,
    "autoscaling": {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": 3,
        "mode": "alerts",
        "cooldownSeconds": 0,
        "scaleDownStabilizationSeconds": 2,
    },
}


def test_alert_webhook_scales_out_and_back_in(api):
    with running_operator(api) as op:
        api.create(TTS.format(ns=NS), tts_object("demo", AUTOSCALED))
        wait_for(lambda: deployment(api), what="the Deployment")
        # Without any alert there is no signal: no scaling, and a condition says why.
        wait_for(
            lambda: (c := condition(tts(api), "MetricsAvailable")) and c["status"] == "False", what="NoData"
        )
        assert deployment(api)["spec"]["replicas"] == 1

        assert op.post_alerts(webhook_payload(alert("firing")))[0] == 200
        wait_for(lambda: deployment(api)["spec"]["replicas"] == 3, what="scale out to maxReplicas")
        status = tts(api)["status"]["autoscaler"]
        assert status["desiredReplicas"] == 3 and "scaled out" in status["lastScaleReason"]
        assert any("scaled out" in m for m in op.event_messages("Scaled"))

        # An out-of-order (older) resolved notification is ignored.
        op.post_alerts(
            webhook_payload(alert("resolved", starts="2025-12-31T00:00:00Z", ends="2025-12-31T00:10:00Z"))
        )
        assert tts(api)["status"]["autoscaler"]["alert"]["firing"] is True

        op.post_alerts(webhook_payload(alert("resolved", ends="2026-01-01T00:05:00Z")))
        wait_for(
            lambda: deployment(api)["spec"]["replicas"] == 1, timeout=30, what="scale back in to minReplicas"
        )
        assert any("scaled in" in m for m in op.event_messages("Scaled"))


def test_webhook_validates_ignores_foreign_alerts_and_checks_token(api):
    with running_operator(api, KUBETTS_OPERATOR_WEBHOOK_TOKEN="s3cret") as op:
        assert op.post_alerts(webhook_payload(alert("firing")))[0] == 401
        assert op.post_alerts({"alerts": "nope"}, token="s3cret")[0] == 400
        assert op.post_alerts({"alerts": [{"status": "weird", "labels": {}}]}, token="s3cret")[0] == 400
        status, body = op.post_alerts(webhook_payload(alert("firing", name="not-ours")), token="s3cret")
        assert status == 200 and body["recorded"] == 0
        other = {**alert("firing"), "labels": {"alertname": "SomethingElse"}}
        assert op.post_alerts(webhook_payload(other), token="s3cret")[1]["received"] == 0


def test_poll_mode_without_prometheus_does_not_scale_and_says_why(api):
    spec = {
        **AUTOSCALED,
        "autoscaling": {**AUTOSCALED["autoscaling"], "mode": "poll", "prometheusURL": "http://127.0.0.1:9"},
    }
    with running_operator(api):
        api.create(TTS.format(ns=NS), tts_object("demo", spec))
        cond = wait_for(
            lambda: (c := condition(tts(api), "MetricsAvailable")) and c["status"] == "False" and c,
            what="MetricsAvailable=False",
        )
        assert "Prometheus unreachable" in cond["message"]
        assert deployment(api)["spec"]["replicas"] == 1


def test_operator_uses_exactly_what_the_charts_rbac_grants(tmp_path):
    """Every API call the operator (kopf + its client) makes is allowed by the chart's ClusterRole,
    and the ClusterRole grants nothing the operator did not use."""
    test_chart = pytest.importorskip("test_chart")
    if not __import__("pathlib").Path(test_chart.HELM).is_file():
        pytest.skip("Helm not installed")
    api = RunningAPI(monitoring=True)
    try:
        with running_operator(api) as op:
            api.create(TTS.format(ns=NS), tts_object("demo", AUTOSCALED))
            first = wait_for(lambda: deployment(api), what="the Deployment")
            api.delete(f"{DEPLOYMENTS.format(ns=NS)}/demo")
            wait_for(
                lambda: (d := deployment(api)) and d["metadata"]["uid"] != first["metadata"]["uid"],
                what="repair",
            )
            api.patch(f"{TTS.format(ns=NS)}/demo", {"spec": {"autoscaling": {"p99TargetSeconds": 0.7}}})
            rules = f"/apis/monitoring.coreos.com/v1/namespaces/{NS}/prometheusrules/demo"
            wait_for(
                lambda: (r := api.get(rules)) and r["spec"]["groups"][0]["rules"][0]["expr"].endswith("0.7"),
                what="the PrometheusRule update",
            )
            monitor = f"/apis/monitoring.coreos.com/v1/namespaces/{NS}/servicemonitors/demo"
            api.patch(monitor, {"spec": {"endpoints": []}})
            wait_for(lambda: api.get(monitor)["spec"]["endpoints"], what="the ServiceMonitor repair")
            api.patch(f"{SERVICES.format(ns=NS)}/demo", {"spec": {"type": "NodePort"}})
            wait_for(
                lambda: api.get(f"{SERVICES.format(ns=NS)}/demo")["spec"]["type"] == "ClusterIP",
                what="repair",
            )
            op.post_alerts(webhook_payload(alert("firing")))
            wait_for(lambda: deployment(api)["spec"]["replicas"] == 3, what="scale-out")
            api.create(
                TTS.format(ns=NS), tts_object("bad", {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}})
            )
            wait_for(lambda: op.event_messages("InvalidSpec"), what="the invalid-spec event")
            api.delete(f"{TTS.format(ns=NS)}/bad")
            wait_for(lambda: tts(api, "bad") is None, what="deletion")
        calls = api.handler.calls
    finally:
        api.stop()
    used: dict[tuple[str, str], set[str]] = {}
    for agent, verb, group, resource in calls:
        if agent.startswith(("kopf/", "kubetts-operator/")):
            used.setdefault((group, resource), set()).add(verb)
    (role,) = test_chart.by_kind(test_chart.render(), "ClusterRole")
    grants = test_chart.granted(role)
    for key, verbs in used.items():
        assert verbs <= grants.get(key, set()), (
            f"operator used {sorted(verbs)} on {key}; RBAC grants {grants.get(key)}"
        )
    # Nothing granted that the operator never used (events.k8s.io is kopf's alternative events API).
    unused = {k: v - used.get(k, set()) for k, v in grants.items() if k != ("events.k8s.io", "events")}
    assert {k: sorted(v) for k, v in unused.items() if v} == {}


def test_a_firing_alert_that_alertmanager_stops_confirming_goes_stale(api):
    with running_operator(api, KUBETTS_OPERATOR_ALERT_STALE_S="2") as op:
        api.create(
            TTS.format(ns=NS),
            tts_object(
                "demo", {**AUTOSCALED, "autoscaling": {**AUTOSCALED["autoscaling"], "cooldownSeconds": 3600}}
            ),
        )
        wait_for(lambda: deployment(api), what="the Deployment")
        op.post_alerts(webhook_payload(alert("firing")))
        wait_for(lambda: deployment(api)["spec"]["replicas"] == 2, what="one scale-out step")
        first = tts(api)["status"]["autoscaler"]["alert"]["receivedAt"]
        op.post_alerts(webhook_payload(alert("firing")))  # a re-notification refreshes it
        wait_for(lambda: tts(api)["status"]["autoscaler"]["alert"]["receivedAt"] > first, what="refresh")
        cond = wait_for(
            lambda: (c := condition(tts(api), "MetricsAvailable")) and c["status"] == "False" and c,
            what="the stale alert to count as no data",
        )
        assert "last confirmed" in cond["message"]
        assert deployment(api)["spec"]["replicas"] == 2
