"""The autoscaler and its inputs on a real control plane.

* The Alertmanager webhook: token required, payloads and label values validated, an alert only for
  a TTSService in the namespace it was evaluated in, stale notifications ignored, what the API
  server refuses for good answered 200 (so Alertmanager does not retry it forever).
* Decisions in proportion to the demand the alerts carry, waiting for starting pods.
* The monitoring objects (ServiceMonitor, PrometheusRule with the stack's selector labels) in an API
  server that has prometheus-operator's CRDs and validates them.
* The providers: ``hpa`` (an autoscaling/v2 HPA the real controller-manager runs), ``keda`` (a
  ScaledObject the real API server validates against KEDA's CRD), the hand-over of
  ``Deployment.spec.replicas`` between them without a dip, and a user's own HPA on the TTSService's
  scale subresource.

One operator for the module, with a webhook token, a short alert stale time and operator-wide
monitoring labels; the replica count it decides is what the Deployment in the cluster gets.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kube_cluster import condition, tts
from operator_harness import running_operator, tts_object, wait_for
from tts_operator import login
from tts_operator.config import OperatorConfig
from tts_operator.kube import FIELD_MANAGER, KubeClient
from tts_operator.promql import HIGH_ALERT, LOW_ALERT
from tts_operator.webhook import make_app

TOKEN = "s3cret"
STALE_S = 6
DEFAULT_LABELS = {"release": "kube-prometheus-stack", "team": "speech"}


@pytest.fixture(scope="module")
def operator(cluster, tmp_path_factory):
    env = {
        "KUBETTS_OPERATOR_WEBHOOK_TOKEN": TOKEN,
        "KUBETTS_OPERATOR_ALERT_STALE_S": str(STALE_S),
        "KUBETTS_OPERATOR_MONITORING_LABELS": json.dumps(DEFAULT_LABELS),
    }
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
    alertname: str = HIGH_ALERT,
    demand: float | None = None,
    name: str = "demo",
    starts: str = "2026-01-01T00:00:00Z",
    ends: str = "0001-01-01T00:00:00Z",
    namespace: str | None = None,
) -> dict:
    """One alert as Prometheus sends it: the operator's labels plus the evaluated ``namespace``."""
    labels = {"alertname": alertname, "namespace": ns if namespace is None else namespace}
    labels |= {"tts_namespace": ns, "tts_name": name, "severity": "warning"}
    annotations = {} if demand is None else {"demand": str(demand)}
    return {
        "status": status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": starts,
        "endsAt": ends,
    }


def payload(*alerts):
    return {"version": "4", "status": alerts[0]["status"], "receiver": "kubetts", "alerts": list(alerts)}


def autoscaled(**overrides) -> dict:
    return {
        "replicas": 1,
        "autoscaling": {
            "enabled": True, "minReplicas": 1, "maxReplicas": 4, "mode": "alerts", "for": "1s",
            "scaleDownStabilizationSeconds": 2, **overrides,
        },
    }  # fmt: skip


def replicas(cluster, ns, name="demo") -> int | None:
    deployment = cluster.plane.get("deployment", name, "-n", ns)
    return deployment and deployment["spec"].get("replicas")


def autoscaler(cluster, ns) -> dict:
    return (tts(cluster, "demo", ns).get("status") or {}).get("autoscaler") or {}


def ready(cluster, ns, count: int) -> None:
    wait_for(
        lambda: (tts(cluster, "demo", ns).get("status") or {}).get("readyReplicas") == count,
        timeout=60,
        what=f"{count} ready pods",
    )


# -- the webhook ----------------------------------------------------------------------------


def test_the_webhook_refuses_what_it_must(cluster, operator, ns):
    cluster.plane.apply(tts_object("demo", autoscaled(), ns))
    wait_for(lambda: replicas(cluster, ns), what="the Deployment")
    firing = payload(alert(ns, "firing", demand=4.0))
    assert operator.post_alerts(firing)[0] == 401
    assert operator.post_alerts(firing, token="wrong")[0] == 401
    assert operator.post_alerts({"alerts": "nope"}, token=TOKEN)[0] == 400
    assert operator.post_alerts({"alerts": [{"status": "weird", "labels": {}}]}, token=TOKEN)[0] == 400

    def ignored(*alerts) -> list[str]:
        status, body = operator.post_alerts(payload(*alerts), token=TOKEN)
        assert status == 200 and body["recorded"] == 0, body
        return [item["reason"] for item in body["ignored"]]

    # Label values that are not Kubernetes names never reach an API path.
    (reason,) = ignored(alert(ns, "firing", demand=4.0, name="../../../api/v1/secrets"))
    assert "not a TTSService name" in reason
    bad_namespace = alert(ns, "firing", demand=4.0)
    bad_namespace["labels"]["tts_namespace"] = bad_namespace["labels"]["namespace"] = "Kube System"
    assert "not a namespace name" in ignored(bad_namespace)[0]
    # An alert evaluated in another namespace may not scale this one.
    (reason,) = ignored(alert(ns, "firing", demand=4.0, namespace="attacker"))
    assert "only scale a TTSService in the namespace it was evaluated in" in reason
    (reason,) = ignored(alert(ns, "firing", demand=4.0, name="not-there"))
    assert "no TTSService" in reason
    other = alert(ns, "firing")
    other["labels"]["alertname"] = "SomethingElse"
    assert operator.post_alerts(payload(other), token=TOKEN)[1]["received"] == 0  # not ours at all
    assert replicas(cluster, ns) == 1 and not autoscaler(cluster, ns).get("alerts")


def _kube_client(monkeypatch, kubeconfig: Path) -> KubeClient:
    """A client with ``kubeconfig``'s credentials, loaded as the operator loads its own."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not "in a pod"
    return KubeClient(login.Source(Path("/nonexistent")).load)


async def test_a_refusal_for_good_is_answered_200_with_the_reason(
    cluster, aiohttp_client, tmp_path, monkeypatch
):
    """A webhook whose credentials may read TTSServices but not write their status: the real API
    server answers 403, and Alertmanager gets a 200 (a retry could never succeed)."""
    ns = cluster.namespace("forbidden")
    cluster.plane.apply(tts_object("demo", autoscaled(), ns))
    cluster.plane.kubectl("create", "serviceaccount", "reader", "-n", ns)
    cluster.plane.kubectl(
        "create", "role", "reader", "-n", ns, "--verb=get", "--resource=ttsservices.kubetts.io"
    )
    cluster.plane.kubectl(
        "create", "rolebinding", "reader", "-n", ns, "--role=reader", f"--serviceaccount={ns}:reader"
    )
    token = cluster.plane.service_account_token(ns, "reader")
    path = cluster.user_kubeconfig(tmp_path / "reader.kubeconfig", {"token": token}, namespace=ns)

    client = _kube_client(monkeypatch, path)
    try:
        web = await aiohttp_client(make_app(client, TOKEN))
        response = await web.post(
            "/alertmanager",
            json=payload(alert(ns, "firing", demand=3.0)),
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status == 200
        body = await response.json()
        (item,) = body["ignored"]
        assert body["recorded"] == 0 and "refused" in item["reason"] and "403" in item["reason"]
    finally:
        await client.close()
    assert not ((tts(cluster, "demo", ns).get("status") or {}).get("autoscaler") or {}).get("alerts")


async def test_without_a_token_every_alert_is_refused_unless_insecure(cluster, aiohttp_client, monkeypatch):
    """Secure by default: an operator started without a token (plain manifests before their Secret
    exists) refuses every alert with a 401 that says what to set; only an explicit insecure switch
    accepts unauthenticated alerts."""
    defaults = OperatorConfig()
    assert defaults.webhook_token == "" and not defaults.webhook_insecure
    assert defaults.webhook_host == "127.0.0.1"  # loopback unless told (the chart gives the pod IP)
    ns = cluster.namespace("tokenless")
    cluster.plane.apply(tts_object("demo", autoscaled(), ns))
    client = _kube_client(monkeypatch, cluster.operator_kubeconfig)
    try:
        secure = await aiohttp_client(make_app(client, ""))
        response = await secure.post("/alertmanager", json=payload(alert(ns, "firing", demand=2.0)))
        assert response.status == 401
        assert "KUBETTS_OPERATOR_WEBHOOK_TOKEN" in (await response.json())["error"]
        told: list[dict] = []
        insecure = await aiohttp_client(make_app(client, "", insecure=True, on_recorded=told.append))
        both = payload(
            alert(ns, "firing", demand=2.0),
            alert(ns, "resolved", alertname=LOW_ALERT, ends="2026-01-01T00:05:00Z"),
            alert(ns, "firing", demand=2.0, name="not-there"),
        )
        response = await insecure.post("/alertmanager", json=both)
        assert response.status == 200 and (await response.json())["recorded"] == 2
    finally:
        await client.close()
    assert autoscaler(cluster, ns)["alerts"][HIGH_ALERT]["demand"] == 2.0
    # The operator is told once per TTSService whose alerts changed, with the object as written.
    (obj,) = told
    assert obj["metadata"]["name"] == "demo" and set(obj["status"]["autoscaler"]["alerts"]) == {
        HIGH_ALERT,
        LOW_ALERT,
    }


# -- decisions ------------------------------------------------------------------------------


def test_alerts_scale_in_proportion_and_wait_for_starting_pods(cluster, operator, ns):
    cluster.plane.apply(tts_object("demo", autoscaled(), ns))
    wait_for(lambda: replicas(cluster, ns), what="the Deployment")
    # No alert yet: no signal, no scaling, and a condition says why.
    wait_for(
        lambda: (c := condition(tts(cluster, "demo", ns), "MetricsAvailable")) and c["status"] == "False",
        what="NoData",
    )
    assert replicas(cluster, ns) == 1
    # Twice the capacity needed, with one pod ready: two pods -- not maxReplicas.
    assert operator.post_alerts(payload(alert(ns, "firing", demand=2.0)), token=TOKEN)[0] == 200
    wait_for(lambda: replicas(cluster, ns) == 2, what="scale-out to 2")
    status = wait_for(
        lambda: "scaled out 1 -> 2" in (s := autoscaler(cluster, ns)).get("lastScaleReason", "") and s,
        what="the scale-out reason in status (written after the Deployment)",
    )
    assert status["alerts"][HIGH_ALERT]["demand"] == 2.0
    ready(cluster, ns, 2)
    # Still twice too little with two ready (Alertmanager repeats with the new demand): four.
    operator.post_alerts(payload(alert(ns, "firing", demand=4.0)), token=TOKEN)
    wait_for(lambda: replicas(cluster, ns) == 4, what="scale-out to 4")
    ready(cluster, ns, 4)
    assert any(
        "scaled out 2 -> 4" in e["message"]
        for e in cluster.plane.get("events", "-n", ns)["items"]
        if e["reason"] == "Scaled"
    )
    # An older (out-of-order) resolved notification is ignored ...
    old = alert(ns, "resolved", starts="2025-12-31T00:00:00Z", ends="2025-12-31T00:10:00Z")
    operator.post_alerts(payload(old), token=TOKEN)
    assert autoscaler(cluster, ns)["alerts"][HIGH_ALERT]["firing"] is True
    # ... the real one, and a Low alert (one replica's worth would do): back to one, after the
    # stabilization window.
    operator.post_alerts(payload(alert(ns, "resolved", ends="2026-01-01T00:05:00Z")), token=TOKEN)
    operator.post_alerts(payload(alert(ns, "firing", alertname=LOW_ALERT, demand=0.8)), token=TOKEN)
    wait_for(lambda: replicas(cluster, ns) == 1, timeout=60, what="scale-in to 1")
    # The Deployment is written before the status: wait for the status to say why.
    wait_for(
        lambda: "scaled in 4 -> 1" in autoscaler(cluster, ns).get("lastScaleReason", ""),
        what="the scale-in reason in status",
    )


def test_a_scale_out_waits_for_its_pods_before_the_next(cluster, operator, ns):
    """Pods that never become ready (unschedulable): one scale-out, then a hold, however high."""
    spec = autoscaled()
    spec["nodeSelector"] = {"kubetts.io/no-such-node": "true"}
    cluster.plane.apply(tts_object("demo", spec, ns))
    wait_for(lambda: replicas(cluster, ns), what="the Deployment")
    operator.post_alerts(payload(alert(ns, "firing", demand=2.0)), token=TOKEN)
    wait_for(lambda: replicas(cluster, ns) == 2, what="the first scale-out")
    operator.post_alerts(payload(alert(ns, "firing", demand=4.0)), token=TOKEN)
    wait_for(
        lambda: "starting pod" in autoscaler(cluster, ns).get("lastDecision", ""), what="the startup hold"
    )
    assert replicas(cluster, ns) == 2


def test_blind_holds_in_both_directions(cluster, operator, ns):
    cluster.plane.apply(tts_object("demo", autoscaled(), ns))
    wait_for(lambda: replicas(cluster, ns), what="the Deployment")
    operator.post_alerts(payload(alert(ns, "firing", demand=2.0)), token=TOKEN)
    wait_for(lambda: replicas(cluster, ns) == 2, what="one scale-out step")
    first = autoscaler(cluster, ns)["alerts"][HIGH_ALERT]["receivedAt"]
    operator.post_alerts(payload(alert(ns, "firing", demand=2.0)), token=TOKEN)  # a repeat refreshes it
    wait_for(lambda: autoscaler(cluster, ns)["alerts"][HIGH_ALERT]["receivedAt"] > first, what="refresh")
    # Alertmanager goes silent: the firing alert goes stale, and nothing scales on it.
    cond = wait_for(
        lambda: (
            (c := condition(tts(cluster, "demo", ns), "MetricsAvailable")) and c["status"] == "False" and c
        ),
        timeout=30,
        what="the stale alert to count as no data",
    )
    assert "Alertmanager silent?" in cond["message"]
    assert replicas(cluster, ns) == 2
    # A resolved alert goes stale exactly the same: no data is no scale-in either.
    operator.post_alerts(payload(alert(ns, "resolved", ends="2026-01-01T00:05:00Z")), token=TOKEN)
    operator.post_alerts(payload(alert(ns, "firing", alertname=LOW_ALERT, demand=0.5)), token=TOKEN)
    wait_for(lambda: replicas(cluster, ns) == 1, what="scale-in on a fresh Low alert")
    operator.post_alerts(
        payload(alert(ns, "resolved", alertname=LOW_ALERT, ends="2026-01-01T00:09:00Z")), token=TOKEN
    )
    wait_for(
        lambda: "no data" in autoscaler(cluster, ns).get("lastDecision", ""),
        timeout=30,
        what="stale resolved alerts",
    )
    assert replicas(cluster, ns) == 1


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


def test_minreplicas_zero_is_refused_when_autoscaling(cluster, operator, ns):
    result = cluster.plane.kubectl(
        "apply", "-f", "-", input=json.dumps(tts_object("demo", autoscaled(minReplicas=0), ns)), check=False
    )
    assert result.returncode != 0 and "minReplicas must be at least 1" in result.stderr


# -- monitoring objects ----------------------------------------------------------------------


def test_monitoring_objects_are_valid_and_carry_the_stacks_labels(cluster, operator, ns):
    """The API server has prometheus-operator's CRDs (from its Go module) and validates each object."""
    spec = {"autoscaling": {"queueWaitTargetSeconds": 0.8}, "monitoring": {"labels": {"team": "voice"}}}
    cluster.plane.apply(tts_object("demo", spec, ns))
    monitor = wait_for(
        lambda: cluster.plane.get("servicemonitor", "demo", "-n", ns), what="the ServiceMonitor"
    )
    rule = wait_for(lambda: cluster.plane.get("prometheusrule", "demo", "-n", ns), what="the PrometheusRule")
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    for child in (monitor, rule):
        assert child["metadata"]["ownerReferences"][0]["name"] == "demo"
        # kube-prometheus-stack selects by `release`; the TTSService's own labels win.
        assert {"release": "kube-prometheus-stack", "team": "voice"}.items() <= child["metadata"][
            "labels"
        ].items()
    rules = {r.get("alert") or r.get("record"): r for r in rule["spec"]["groups"][0]["rules"]}
    assert {HIGH_ALERT, LOW_ALERT, "tts_capacity_ratio", "tts_capacity_demand"} <= set(rules)
    expr = rules[HIGH_ALERT]["expr"]
    assert "> 0.8" in expr and 'service="demo"' in expr and f'namespace="{ns}"' in expr
    # A change reaches them too.
    cluster.patch_tts("demo", ns, {"spec": {"autoscaling": {"queueWaitTargetSeconds": 0.7}}})
    wait_for(
        lambda: (
            "> 0.7"
            in cluster.plane.get("prometheusrule", "demo", "-n", ns)["spec"]["groups"][0]["rules"][2]["expr"]
        ),
        what="the PrometheusRule update",
    )


# -- providers ------------------------------------------------------------------------------


def deployment(cluster, ns) -> dict:
    """The Deployment with its managedFields (kubectl hides them unless asked)."""
    return cluster.plane.get("deployment", "demo", "-n", ns, "--show-managed-fields")


def owns_replicas(deployment: dict, manager: str = FIELD_MANAGER) -> bool:
    return any(
        entry["manager"] == manager and '"f:replicas"' in json.dumps(entry.get("fieldsV1", {}))
        for entry in deployment["metadata"].get("managedFields", [])
        if entry.get("operation") == "Apply"
    )


def scaled_down_events(cluster, ns) -> list[str]:
    return [
        e["message"]
        for e in cluster.plane.get("events", "-n", ns)["items"]
        if e["reason"] == "ScalingReplicaSet" and "down" in e["message"]
    ]


def test_provider_hpa_hands_replicas_to_a_real_hpa_without_a_dip(cluster, operator, ns):
    # Builtin first, at three replicas (the operator owns the field).
    cluster.plane.apply(
        tts_object("demo", autoscaled(minReplicas=3, mode="poll", prometheusURL="http://127.0.0.1:9"), ns)
    )
    wait_for(lambda: replicas(cluster, ns) == 3, what="three replicas (builtin)")
    ready(cluster, ns, 3)
    assert owns_replicas(deployment(cluster, ns))
    # Hand over to an HPA with minReplicas 2: the controller-manager runs it (no metrics adapter
    # here: it keeps the count within its bounds and does no more).
    cluster.patch_tts("demo", ns, {"spec": {"autoscaling": {"provider": "hpa", "minReplicas": 2}}})
    hpa = wait_for(lambda: cluster.plane.get("hpa", "demo", "-n", ns), what="the HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "demo" and hpa["spec"]["minReplicas"] == 2
    assert hpa["metadata"]["ownerReferences"][0]["name"] == "demo"
    wait_for(
        lambda: not owns_replicas(deployment(cluster, ns)),
        what="the operator to leave spec.replicas",
    )
    wait_for(
        lambda: (cluster.plane.get("hpa", "demo", "-n", ns).get("status") or {}).get("currentReplicas") == 3,
        what="the HPA controller to see the Deployment",
    )
    # The hand-over kept three replicas: no ReplicaSet was ever scaled down.
    assert replicas(cluster, ns) == 3 and scaled_down_events(cluster, ns) == []
    assert tts(cluster, "demo", ns)["status"]["phase"] == "Running"
    # The HPA changes the count (to its maxReplicas here); the operator leaves it alone.
    cluster.plane.kubectl(
        "patch", "hpa", "demo", "-n", ns, "--type=merge", "-p", '{"spec": {"minReplicas": 4}}'
    )
    wait_for(lambda: replicas(cluster, ns) == 4, what="the HPA to scale the Deployment")
    ready(cluster, ns, 4)  # the operator's status follows the HPA's count
    assert replicas(cluster, ns) == 4
    # The operator's next apply restores its HPA spec; the count stays with the HPA.
    wait_for(
        lambda: cluster.plane.get("hpa", "demo", "-n", ns)["spec"]["minReplicas"] == 2, what="drift repaired"
    )
    # Back to builtin: the HPA goes, the operator takes the field back (within its bounds).
    cluster.patch_tts("demo", ns, {"spec": {"autoscaling": {"provider": "builtin"}}})
    wait_for(lambda: cluster.plane.get("hpa", "demo", "-n", ns) is None, what="the HPA deleted")
    wait_for(lambda: owns_replicas(deployment(cluster, ns)), what="replicas owned again")


def test_provider_keda_writes_a_scaled_object_the_server_validates(cluster, operator, ns):
    spec = autoscaled(provider="keda", prometheusURL="http://prometheus.monitoring.svc:9090")
    cluster.plane.apply(tts_object("demo", spec, ns))
    scaled = wait_for(lambda: cluster.plane.get("scaledobject", "demo", "-n", ns), what="the ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metadata"]["threshold"] == "1"
    assert f'namespace="{ns}"' in trigger["metadata"]["query"]
    assert scaled["spec"]["fallback"]["behavior"] == "currentReplicas"
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo"}
    assert not owns_replicas(deployment(cluster, ns))
    # KEDA's CRD validates: an object the schema refuses is refused (the operator's would be too).
    bad = {
        **scaled,
        "metadata": {"name": "bad", "namespace": ns},
        "spec": {**scaled["spec"], "pollingInterval": "often"},
    }
    result = cluster.plane.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert result.returncode != 0 and "pollingInterval" in result.stderr
    # Switching provider deletes the other one's object.
    cluster.patch_tts("demo", ns, {"spec": {"autoscaling": {"provider": "hpa"}}})
    wait_for(lambda: cluster.plane.get("hpa", "demo", "-n", ns), what="the HPA")
    wait_for(
        lambda: cluster.plane.get("scaledobject", "demo", "-n", ns) is None, what="the ScaledObject deleted"
    )
    # Without a Prometheus to query, keda cannot work: Degraded, with the reason.
    cluster.patch_tts("demo", ns, {"spec": {"autoscaling": {"provider": "keda", "prometheusURL": None}}})
    cond = wait_for(
        lambda: (c := condition(tts(cluster, "demo", ns), "Degraded")) and c["status"] == "True" and c,
        what="Degraded",
    )
    assert cond["reason"] == "ProviderUnavailable" and "prometheusURL" in cond["message"]


def test_a_users_hpa_on_the_scale_subresource_drives_the_ttsservice(cluster, operator, ns):
    cluster.plane.apply(tts_object("demo", {"replicas": 1}, ns))
    wait_for(lambda: replicas(cluster, ns) == 1, what="the Deployment")
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "mine", "namespace": ns},
        "spec": {
            "scaleTargetRef": {"apiVersion": "kubetts.io/v1alpha1", "kind": "TTSService", "name": "demo"},
            "minReplicas": 3,
            "maxReplicas": 5,
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": {"name": "tts_capacity_demand"},
                        "target": {"type": "AverageValue", "averageValue": "1"},
                    },
                }
            ],
        },
    }
    cluster.plane.apply(hpa)
    # The controller-manager scales the TTSService through /scale; the operator follows.
    wait_for(
        lambda: tts(cluster, "demo", ns)["spec"]["replicas"] == 3,
        timeout=60,
        what="spec.replicas from the HPA",
    )
    wait_for(lambda: replicas(cluster, ns) == 3, what="the Deployment at 3")
    ready(cluster, ns, 3)
    # The HPA reads the count back through the scale subresource's status (its next sync).
    wait_for(
        lambda: (cluster.plane.get("hpa", "mine", "-n", ns).get("status") or {}).get("currentReplicas") == 3,
        what="the HPA to read 3 replicas through /scale",
    )
