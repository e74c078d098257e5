"""The Helm chart and the plain manifests, rendered by a real Helm 3 and validated strictly."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
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
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e
    }
    assert downward == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
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
    docs = render(*TOGGLES["everything"])
    (amc,) = by_kind(docs, "AlertmanagerConfig")
    hook = amc["spec"]["receivers"][0]["webhookConfigs"][0]
    assert (
        hook["url"] == "http://kubetts-operator.kubetts-system.svc:8081/alertmanager" and hook["sendResolved"]
    )
    assert amc["spec"]["route"]["matchers"][0]["value"] == "TTSServiceP99LatencyHigh"
    (example,) = by_kind(docs, "TTSService")
    from tts_operator.spec import parse_spec, validate_spec

    assert validate_spec(parse_spec(example["spec"])) == []
    container = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    token = next(e for e in container["env"] if e["name"] == "KUBETTS_OPERATOR_WEBHOOK_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "am-token", "key": "token"}


@pytest.mark.parametrize(
    "bad",
    [
        ["--set", "operator.replicas=two"],
        ["--set", "operator.webhook.port=99999"],
        ["--set", "operator.image.pullPolicy=Sometimes"],
        ["--set", "operator.p99Window=1 minute"],
        ["--set", "monitoring.enabled=maybe"],
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
