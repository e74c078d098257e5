"""The Helm chart and the plain manifests, rendered by a real Helm 3 and validated strictly."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from tts_operator.promql import ALERTS
from tts_operator.spec import CRD_PATH
from tts_service.metrics import METRIC_NAMES

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "kubetts"
HELM = os.environ.get("KUBETTS_HELM") or str(ROOT / ".cache" / "helm" / "helm")

sys.path.insert(0, str(ROOT / "scripts"))
import manifests  # noqa: E402

pytestmark = pytest.mark.skipif(
    not Path(HELM).is_file() and not os.environ.get("CI"),
    reason="Helm not installed (./dev test runs scripts/install-helm.sh)",
)

# Kinds whose schemas kubernetes-validate ships; the prometheus-operator kinds are checked by content.
CORE_KINDS = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Deployment",
    "Service",
    "ConfigMap",
    "CustomResourceDefinition",
    "Namespace",
    "Secret",
    "NetworkPolicy",
}
TOGGLES = {
    "defaults": [],
    "namespaced": ["--set", "operator.watchNamespaces={tts,voice}"],
    "everything": [
        "--set",
        "monitoring.alertmanagerConfig.enabled=true",
        "--set",
        "exampleTTSService.enabled=true",
        "--set",
        "operator.webhook.tokenSecret=am-token",
        "--set",
        "prometheus.url=http://prometheus:9090",
    ],
    "minimal": ["--set", "monitoring.enabled=false", "--set", "monitoring.dashboard.enabled=false"],
}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([HELM, *args], capture_output=True, text=True, check=check)


def render(*args: str) -> list[dict]:
    out = helm(
        "template", "kubetts", str(CHART), "--namespace", "kubetts-system", "--include-crds", *args
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def test_helm_lint_strict():
    result = helm("lint", "--strict", str(CHART), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("k8s_version", ["1.29", "1.33"])
@pytest.mark.parametrize("toggle", TOGGLES)
def test_every_rendered_object_validates(toggle, k8s_version):
    docs = render(*TOGGLES[toggle])
    for doc in docs:
        if doc["kind"] in CORE_KINDS:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
        else:
            assert doc["kind"] in {"AlertmanagerConfig", "TTSService"}, doc["kind"]
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "kubetts", doc["kind"]


def test_chart_crd_is_the_operators_crd():
    (crd,) = by_kind(render(), "CustomResourceDefinition")
    assert crd == yaml.safe_load(CRD_PATH.read_text())


EXPECTED_RULES = {
    ("kubetts.io", "ttsservices"): {"get", "list", "watch", "patch"},
    ("kubetts.io", "ttsservices/status"): {"patch"},
    ("kubetts.io", "ttsservices/finalizers"): {"update"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch"},
    ("", "services"): {"get", "list", "watch", "create", "patch"},
    ("", "events"): {"create"},
    ("autoscaling", "horizontalpodautoscalers"): {"get", "create", "patch", "delete"},
    ("keda.sh", "scaledobjects"): {"get", "create", "patch", "delete"},
}
MONITORING_RULES = {
    ("monitoring.coreos.com", "servicemonitors"): {"get", "create", "patch"},
    ("monitoring.coreos.com", "prometheusrules"): {"get", "create", "patch"},
}
LEASE_RULES = {("coordination.k8s.io", "leases"): {"get", "create", "update"}}


def granted(role: dict) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


@pytest.mark.parametrize(
    ("toggle", "expected"),
    [
        ("defaults", {**EXPECTED_RULES, **MONITORING_RULES}),
        ("minimal", EXPECTED_RULES),
        ("everything", {**EXPECTED_RULES, **MONITORING_RULES}),
    ],
)
def test_rbac_grants_exactly_what_the_operator_uses(toggle, expected):
    docs = render(*TOGGLES[toggle])
    (role,) = by_kind(docs, "ClusterRole")
    assert granted(role) == expected
    (binding,) = by_kind(docs, "ClusterRoleBinding")
    (account,) = by_kind(docs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "kubetts-system"}
    ]
    (deployment,) = by_kind(docs, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    # Leader election: the Lease only, only in the release's namespace, for the same account.
    (lease_role,) = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-leader-election")]
    assert lease_role["metadata"]["namespace"] == "kubetts-system" and granted(lease_role) == LEASE_RULES
    (lease_binding,) = [
        b for b in by_kind(docs, "RoleBinding") if b["roleRef"]["name"] == lease_role["metadata"]["name"]
    ]
    assert lease_binding["subjects"] == binding["subjects"]


def test_namespaced_watching_uses_roles_and_namespace_flags():
    docs = render(*TOGGLES["namespaced"])
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    watching = [r for r in by_kind(docs, "Role") if not r["metadata"]["name"].endswith("-leader-election")]
    assert {r["metadata"]["namespace"] for r in watching} == {"tts", "voice"}
    bindings = [
        b for b in by_kind(docs, "RoleBinding") if not b["metadata"]["name"].endswith("-leader-election")
    ]
    assert {b["metadata"]["namespace"] for b in bindings} == {"tts", "voice"}
    args = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=tts" in args and "--namespace=voice" in args and "--all-namespaces" not in args


def test_operator_deployment_defaults():
    docs = render()
    (deployment,) = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "kubetts/operator:0.1.0"
    assert "--all-namespaces" in container["args"]
    assert "--leader-election-namespace=$(POD_NAMESPACE)" in container["args"]
    downward = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in container["env"]
        if "fieldRef" in e.get("valueFrom", {})
    }
    assert downward == {
        "POD_NAME": "metadata.name",
        "POD_NAMESPACE": "metadata.namespace",
        "POD_IP": "status.podIP",
    }
    assert {e["name"]: e.get("value") for e in container["env"]}[
        "KUBETTS_OPERATOR_WEBHOOK_HOST"
    ] == "$(POD_IP)"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBETTS_OPERATOR_WEBHOOK_PORT"] == "8081" and env["KUBETTS_OPERATOR_MONITORING"] == "true"
    sc = container["securityContext"]
    assert (
        sc["readOnlyRootFilesystem"]
        and not sc["allowPrivilegeEscalation"]
        and sc["capabilities"]["drop"] == ["ALL"]
    )
    assert pod["securityContext"]["runAsNonRoot"]
    (service,) = by_kind(docs, "Service")
    assert (
        service["spec"]["ports"][0]["port"] == 8081 and service["spec"]["ports"][0]["targetPort"] == "webhook"
    )


def test_everything_toggle():
    from tts_operator.spec import parse_spec

    docs = render(*TOGGLES["everything"])
    (amc,) = by_kind(docs, "AlertmanagerConfig")
    assert amc["metadata"]["namespace"] == "kubetts-system"
    hook = amc["spec"]["receivers"][0]["webhookConfigs"][0]
    assert (
        hook["url"] == "http://kubetts-operator.kubetts-system.svc:8081/alertmanager" and hook["sendResolved"]
    )
    # The user's own token Secret, for the operator and for Alertmanager alike; none generated.
    assert hook["httpConfig"]["authorization"]["credentials"] == {"name": "am-token", "key": "token"}
    assert not by_kind(docs, "Secret")
    (matcher,) = amc["spec"]["route"]["matchers"]
    assert matcher["matchType"] == "=~"
    assert set(matcher["value"].split("|")) == set(ALERTS)
    # The route receives the alerts the operator's rules raise, as Prometheus labels them: each
    # alert's own labels plus its name and the TTSService's namespace (kept by every aggregation:
    # tests/test_promql.py), which prometheus-operator's default OnNamespace strategy matches.
    from tts_operator.promql import rule_group

    namespace = amc["metadata"]["namespace"]
    for rule in rule_group("demo", namespace, parse_spec({}))["rules"]:
        if "alert" not in rule:
            continue
        labels = {**rule["labels"], "alertname": rule["alert"], "namespace": namespace}
        assert re.fullmatch(matcher["value"], labels[matcher["name"]]), rule["alert"]
        assert set(amc["spec"]["route"]["groupBy"]) <= set(labels)
    (example,) = by_kind(docs, "TTSService")
    from tts_operator.spec import validate_spec

    assert validate_spec(parse_spec(example["spec"])) == []
    container = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    token = next(e for e in container["env"] if e["name"] == "KUBETTS_OPERATOR_WEBHOOK_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "am-token", "key": "token", "optional": True}


def _env(docs: list[dict]) -> dict[str, dict]:
    container = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container["env"]}


def test_a_webhook_token_is_generated_by_default_and_copied_where_alertmanager_needs_it():
    docs = render("--set", "monitoring.alertmanagerConfig.enabled=true",
                  "--set", "monitoring.alertmanagerConfig.namespaces={kubetts-system,voice,tts}")  # fmt: skip
    secrets = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in by_kind(docs, "Secret")}
    assert set(secrets) == {(ns, "kubetts-webhook-token") for ns in ("kubetts-system", "voice", "tts")}
    tokens = {base64.b64decode(d["data"]["token"]).decode() for d in secrets.values()}
    (token,) = tokens  # one token, the same in every copy
    assert len(token) >= 32 and token.isalnum()
    assert _env(docs)["KUBETTS_OPERATOR_WEBHOOK_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "kubetts-webhook-token",
        "key": "token",
        "optional": True,
    }
    configs = by_kind(docs, "AlertmanagerConfig")
    # One per namespace: the default matcher strategy only routes a namespace's own alerts.
    assert {c["metadata"]["namespace"] for c in configs} == {"kubetts-system", "voice", "tts"}
    for config in configs:
        credentials = config["spec"]["receivers"][0]["webhookConfigs"][0]["httpConfig"]["authorization"]
        assert credentials["credentials"] == {"name": "kubetts-webhook-token", "key": "token"}
    # Each render draws a new one; an installed release keeps its own (lookup; tested on a real
    # cluster in test_operator.py).
    again = render()
    (other,) = by_kind(again, "Secret")
    assert base64.b64decode(other["data"]["token"]).decode() != token


def test_alertmanager_configs_follow_the_watched_namespaces():
    docs = render(
        "--set", "monitoring.alertmanagerConfig.enabled=true", "--set", "operator.watchNamespaces={tts,voice}"
    )
    assert {c["metadata"]["namespace"] for c in by_kind(docs, "AlertmanagerConfig")} == {"tts", "voice"}


def test_network_policy_admits_the_webhook_only_from_alertmanagers_namespaces():
    docs = render("--set", "operator.webhook.allowedNamespaces={monitoring,observability}")
    (policy,) = by_kind(docs, "NetworkPolicy")
    (deployment,) = by_kind(docs, "Deployment")
    assert policy["spec"]["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    webhook, health = policy["spec"]["ingress"]
    assert webhook["ports"] == [{"port": "webhook", "protocol": "TCP"}]
    assert [
        f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for f in webhook["from"]
    ] == [
        "monitoring",
        "observability",
    ]
    assert health == {"ports": [{"port": "health", "protocol": "TCP"}]}  # the kubelet's probes
    ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {"webhook", "health"} <= ports
    assert not by_kind(render("--set", "operator.webhook.networkPolicy.enabled=false"), "NetworkPolicy")
    # No namespace listed: no webhook rule at all (an empty `from` would admit every source).
    (closed,) = by_kind(render("--set-json", "operator.webhook.allowedNamespaces=[]"), "NetworkPolicy")
    assert closed["spec"]["ingress"] == [health]


def test_monitoring_labels_reach_the_operator():
    docs = render("--set", "monitoring.labels.release=kube-prometheus-stack")
    value = _env(docs)["KUBETTS_OPERATOR_MONITORING_LABELS"]["value"]
    assert json.loads(value) == {"release": "kube-prometheus-stack"}
    assert json.loads(_env(render())["KUBETTS_OPERATOR_MONITORING_LABELS"]["value"]) == {}


@pytest.mark.parametrize(
    "bad",
    [
        ["--set", "operator.replicas=two"],
        ["--set", "operator.webhook.port=99999"],
        ["--set", "operator.image.pullPolicy=Sometimes"],
        ["--set", "operator.signalWindow=1 minute"],
        ["--set", "monitoring.enabled=maybe"],
        ["--set", "monitoring.labels.release=1"],
        ["--set", "operator.webhook.allowedNamespaces=monitoring"],
        ["--set", "unknownKey=1"],
    ],
)
def test_values_schema_rejects_bad_values(bad):
    result = helm("template", "kubetts", str(CHART), *bad, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr or "schema" in result.stderr


def test_dashboard_parses_and_queries_only_exported_metrics():
    (config_map,) = by_kind(render(), "ConfigMap")
    dashboard = json.loads(config_map["data"]["kubetts.json"])
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 8
    exported = {
        name + suffix
        for name in METRIC_NAMES
        for suffix in (("_bucket", "_sum", "_count") if not name.endswith(("_total", "_info")) else ("",))
    } | set(METRIC_NAMES)
    used = {m for expr in exprs for m in re.findall(r"\b(tts_[a-z_]+)", expr)}
    assert used and used <= exported, used - exported
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("requests per second", "p99", "queue", "batch size", "real-time factor", "replicas"):
        assert topic in titles


def test_plain_manifests_ship_no_shared_secret():
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests" / "operator.yaml").read_text()) if d]
    assert not by_kind(docs, "Secret")
    ref = _env(docs)["KUBETTS_OPERATOR_WEBHOOK_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == manifests.WEBHOOK_TOKEN_SECRET and ref["optional"] is True
    readme = (ROOT / "README.md").read_text()
    assert f"create secret generic {manifests.WEBHOOK_TOKEN_SECRET}" in readme


def test_manifests_equal_a_fresh_render():
    fresh = manifests.render(HELM)
    for name, content in fresh.items():
        committed = (ROOT / "manifests" / name).read_text()
        assert committed == content, f"manifests/{name} is stale: run scripts/render-manifests.sh"


@pytest.mark.parametrize("k8s_version", ["1.29", "1.33"])
def test_plain_manifests_validate(k8s_version):
    for name in ("crd.yaml", "operator.yaml"):
        for doc in yaml.safe_load_all((ROOT / "manifests" / name).read_text()):
            if doc:
                kubernetes_validate.validate(doc, k8s_version, strict=True)
