"""The operator on a real control plane: reconcile, server-side apply, status, scaling, deletion, errors.

One ``kubetts-operator`` process for the module, authenticated as the chart's ServiceAccount,
so the API server enforces the chart's RBAC on every call; each test works in a namespace of
its own.  Users' steps go through the real ``kubectl``.
"""

from __future__ import annotations

import json
import urllib.parse

import pytest
import yaml
from kube_cluster import ROOT, condition, dump, tts
from operator_harness import running_operator, tts_object, wait_for
from tts_operator.builders import label_selector
from tts_service.settings import Settings

EXAMPLES = ROOT / "manifests" / "examples"
CHILD_KINDS = ("deployment", "service", "servicemonitor", "prometheusrule", "ttsservice")


@pytest.fixture(scope="module")
def operator(cluster, tmp_path_factory):
    with running_operator(tmp_path_factory.mktemp("operator"), kubeconfig=cluster.operator_kubeconfig) as op:
        yield op


@pytest.fixture
def ns(cluster, operator):
    return cluster.namespace()


def deployment(cluster, ns, name="demo"):
    return cluster.plane.get("deployment", name, "-n", ns)


def env_of(dep) -> dict[str, str]:
    # The API server drops empty values ("value: \"\"" is stored as no value): both mean "".
    return {e["name"]: e.get("value", "") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


def running(cluster, ns, name="demo"):
    obj = tts(cluster, name, ns)
    return obj if (obj or {}).get("status", {}).get("phase") == "Running" else None


def events(cluster, ns, reason=None) -> list[dict]:
    items = (cluster.plane.get("events", "-n", ns) or {}).get("items", [])
    return [e for e in items if reason is None or e.get("reason") == reason]


def applies(cluster, path: str) -> int:
    """How many server-side applies the operator sent to ``path`` (the API server's audit log)."""
    return sum(
        1
        for e in cluster.audit()
        if e["verb"] == "patch" and urllib.parse.urlsplit(e["requestURI"]).path == path
    )


def test_users_apply_the_example_and_get_a_running_service(cluster, operator):
    """As the README says: create the namespace, apply the example, watch it with kubectl get tts."""
    example = yaml.safe_load((EXAMPLES / "espeak-cpu.yaml").read_text())
    ns, name = example["metadata"]["namespace"], example["metadata"]["name"]
    cluster.plane.kubectl("create", "namespace", ns)
    cluster.plane.kubectl("apply", "-f", str(EXAMPLES / "espeak-cpu.yaml"))
    obj = wait_for(lambda: running(cluster, ns, name), what="the example to be Running")
    dep, svc = deployment(cluster, ns, name), cluster.plane.get("service", name, "-n", ns)
    for child in (dep, svc):
        (owner,) = child["metadata"]["ownerReferences"]
        assert owner["uid"] == obj["metadata"]["uid"] and owner["controller"] and owner["blockOwnerDeletion"]
    settings = Settings.from_env({k: v for k, v in env_of(dep).items() if k.startswith("TTS_")})
    assert settings.engine == "espeak" and settings.host == "0.0.0.0"
    assert obj["status"]["endpoint"] == f"http://{name}.{ns}.svc:8080"
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    ready = condition(obj, "Ready")
    assert ready["status"] == "True" and ready["observedGeneration"] == obj["metadata"]["generation"]
    # The printer columns users see.
    table = cluster.plane.kubectl("get", "tts", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "ENGINE", "REPLICAS", "READY", "DEMAND", "STATUS", "AGE"]
    assert table[1].split()[:3] == [name, "espeak", str(example["spec"].get("replicas", 1))]
    assert "Running" in table[1]
    # Its pods run on the CPU node, never on the tainted GPU node.
    pods = cluster.plane.get("pods", "-n", ns, "-l", label_selector(name))["items"]
    assert pods and {p["spec"]["nodeName"] for p in pods} == {"kwok-cpu"}
    # No finalizer: deleting the TTSService (or its CRD, or the namespace) never waits for the operator.
    assert not obj["metadata"].get("finalizers")


def test_the_gpu_example_is_scheduled_on_the_gpu_node(cluster, operator):
    example = yaml.safe_load((EXAMPLES / "chattts-gpu.yaml").read_text())
    ns, name, spec = example["metadata"]["namespace"], example["metadata"]["name"], example["spec"]
    if cluster.plane.get("namespace", ns) is None:
        cluster.plane.kubectl("create", "namespace", ns)
    # The storage a user provides first: the weights and the compile cache (static volumes here).
    for claim in (spec["model"]["pvc"]["claimName"], spec["model"]["compileCachePVC"]):
        cluster.plane.apply({
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{ns}-{claim}"},
            "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                     "hostPath": {"path": f"/srv/{claim}"}, "claimRef": {"namespace": ns, "name": claim}},
        })  # fmt: skip
        cluster.plane.apply({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": ns},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": f"{ns}-{claim}",
                     "resources": {"requests": {"storage": "10Gi"}}},
        })  # fmt: skip
    cluster.plane.kubectl("apply", "-f", str(EXAMPLES / "chattts-gpu.yaml"))
    wait_for(lambda: running(cluster, ns, name), timeout=60, what="the GPU example to be Running")
    pods = cluster.plane.get("pods", "-n", ns, "-l", label_selector(name))["items"]
    assert pods and {p["spec"]["nodeName"] for p in pods} == {"kwok-gpu"}, dump(pods)
    container = pods[0]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert any(t["key"] == "nvidia.com/gpu" for t in pods[0]["spec"]["tolerations"])


def test_in_steady_state_the_operator_writes_nothing(cluster, operator, ns):
    cluster.plane.apply(tts_object("demo", {}, ns))
    wait_for(lambda: running(cluster, ns), what="Running")
    dep_path = f"/apis/apps/v1/namespaces/{ns}/deployments/demo"
    before = {
        kind: cluster.plane.get(kind, "demo", "-n", ns)["metadata"]["resourceVersion"] for kind in CHILD_KINDS
    }
    seen_events = len(events(cluster, ns))
    applied = applies(cluster, dep_path)
    # Several resyncs pass (each sends one no-op apply per child, counted in the audit log) ...
    wait_for(lambda: applies(cluster, dep_path) >= applied + 4, timeout=30, what="four more resyncs")
    after = {
        kind: cluster.plane.get(kind, "demo", "-n", ns)["metadata"]["resourceVersion"] for kind in CHILD_KINDS
    }
    # ... and nothing changed: the children, the TTSService's status, the Events.
    assert after == before
    assert len(events(cluster, ns)) == seen_events
    reconciled = [e["message"] for e in events(cluster, ns, "Reconciled")]
    expected = [
        "created Deployment/demo",
        "created PrometheusRule/demo",
        "created Service/demo",
        "created ServiceMonitor/demo",
    ]
    assert sorted(reconciled) == expected, reconciled


def test_removed_fields_disappear_and_other_managers_fields_stay(cluster, operator, ns):
    cluster.plane.apply(
        tts_object(
            "demo", {"nodeSelector": {"type": "kwok"}, "env": [{"name": "EXTRA_FLAG", "value": "1"}]}, ns
        )
    )
    dep = wait_for(lambda: (d := deployment(cluster, ns)) and d, what="the Deployment")
    assert dep["spec"]["template"]["spec"]["nodeSelector"] == {"type": "kwok"} and "EXTRA_FLAG" in env_of(dep)
    # Another manager's annotation and an injected env var (e.g. a mutating webhook or a human).
    cluster.plane.kubectl("annotate", "deployment", "demo", "-n", ns, "team=voice")
    cluster.plane.kubectl("set", "env", "deployment/demo", "-n", ns, "INJECTED=by-someone-else")
    # A field the operator owns, changed by hand, is put back.
    cluster.plane.kubectl("patch", "service", "demo", "-n", ns, "-p", '{"spec": {"type": "NodePort"}}')
    wait_for(
        lambda: cluster.plane.get("service", "demo", "-n", ns)["spec"]["type"] == "ClusterIP",
        what="the repair",
    )
    # A field removed from the spec disappears from the child.
    cluster.patch_tts(
        "demo", ns, [{"op": "remove", "path": "/spec/nodeSelector"}, {"op": "remove", "path": "/spec/env"}]
    )
    dep = wait_for(
        lambda: (d := deployment(cluster, ns)) and "nodeSelector" not in d["spec"]["template"]["spec"] and "EXTRA_FLAG" not in env_of(d) and d,
        what="the removed fields to go",
    )  # fmt: skip
    assert dep["metadata"]["annotations"]["team"] == "voice"
    assert env_of(dep)["INJECTED"] == "by-someone-else"
    assert any(
        "Service/demo" in e["message"]
        for e in events(cluster, ns, "Reconciled")
        if e["message"].startswith("updated")
    )


def test_kubectl_scale_works_through_the_scale_subresource(cluster, operator, ns):
    cluster.plane.apply(tts_object("demo", {}, ns))
    wait_for(lambda: running(cluster, ns), what="Running")
    cluster.plane.kubectl("scale", "tts/demo", "-n", ns, "--replicas=3")
    wait_for(lambda: deployment(cluster, ns)["spec"]["replicas"] == 3, what="three replicas")
    wait_for(lambda: (o := running(cluster, ns)) and o["status"]["readyReplicas"] == 3, what="three ready")
    scale = cluster.plane.api(f"/apis/kubetts.io/v1alpha1/namespaces/{ns}/ttsservices/demo/scale")
    assert scale["spec"]["replicas"] == 3 and scale["status"]["replicas"] == 3
    assert scale["status"]["selector"] == label_selector("demo")  # what an HPA or KEDA selects pods with


def test_ready_only_when_rolled_out_and_degraded_when_the_rollout_cannot_progress(cluster, operator, ns):
    # Pods that no node can take: the rollout cannot progress past its deadline.
    spec = {"nodeSelector": {"no-such-node": "true"}, "progressDeadlineSeconds": 3}
    cluster.plane.apply(tts_object("demo", spec, ns))
    pending = wait_for(
        lambda: (o := tts(cluster, "demo", ns)) and o.get("status", {}).get("phase") and o, what="a status"
    )
    assert condition(pending, "Ready")["status"] == "False"  # pods exist but are not ready: not Ready
    stuck = wait_for(
        lambda: (o := tts(cluster, "demo", ns)) and o["status"].get("phase") == "Degraded" and o, timeout=60, what="Degraded"
    )  # fmt: skip
    degraded = condition(stuck, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "ProgressDeadlineExceeded", dump(
        stuck["status"]
    )
    assert "progress" in degraded["message"].lower()  # the Deployment's own message
    for cond in stuck["status"]["conditions"]:
        assert set(cond) >= {
            "type",
            "status",
            "reason",
            "message",
            "lastTransitionTime",
            "observedGeneration",
        }
        assert cond["observedGeneration"] == stuck["metadata"]["generation"]
    # Fixed: the next generation rolls out and is Ready.
    cluster.patch_tts("demo", ns, [{"op": "remove", "path": "/spec/nodeSelector"}])
    fixed = wait_for(lambda: running(cluster, ns), timeout=60, what="Running after the fix")
    assert condition(fixed, "Degraded")["status"] == "False"
    assert condition(fixed, "Ready")["observedGeneration"] == fixed["metadata"]["generation"] == 2


def test_deleting_a_ttsservice_deletes_its_children_through_the_garbage_collector(cluster, operator, ns):
    cluster.plane.apply(tts_object("demo", {}, ns))
    wait_for(lambda: running(cluster, ns), what="Running")
    cluster.plane.kubectl("delete", "tts", "demo", "-n", ns, "--wait=true", "--timeout=30s")
    wait_for(lambda: deployment(cluster, ns) is None and cluster.plane.get("service", "demo", "-n", ns) is None,
             what="the garbage collector to delete the children")  # fmt: skip
    pods = cluster.plane.get("pods", "-n", ns)["items"]
    wait_for(
        lambda: not cluster.plane.get("pods", "-n", ns)["items"], what="the pods to go"
    ) if pods else None


def test_a_refused_child_degrades_with_the_servers_message_and_is_not_retried_hot(cluster, operator, ns):
    # A quota that forbids Deployments in this namespace: the API server answers 403.
    cluster.plane.apply({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "none", "namespace": ns},
                         "spec": {"hard": {"count/deployments.apps": "0"}}})  # fmt: skip
    cluster.plane.apply(tts_object("demo", {}, ns))
    obj = wait_for(
        lambda: (o := tts(cluster, "demo", ns)) and o.get("status", {}).get("phase") == "Degraded" and o,
        what="Degraded",
    )
    degraded = condition(obj, "Degraded")
    assert degraded["reason"] == "ApplyFailed" and "exceeded quota" in degraded["message"], degraded
    dep_path = f"/apis/apps/v1/namespaces/{ns}/deployments/demo"
    tried = applies(cluster, dep_path)
    # Eight resyncs later it was tried again only as its backoff allows (3 s, then 6 s), not eight times.
    baseline = _resyncs(cluster)
    wait_for(lambda: _resyncs(cluster) >= baseline + 8, timeout=40, what="eight resyncs")
    assert applies(cluster, dep_path) - tried <= 3, (tried, applies(cluster, dep_path))
    assert len(events(cluster, ns, "ApplyFailed")) == 1  # one Warning, not one per attempt
    # An invalid child (requests above limits: 422) says so too; a spec change is retried at once.
    cluster.plane.kubectl("delete", "resourcequota", "none", "-n", ns)
    cluster.patch_tts("demo", ns, {"spec": {"resources": {"requests": {"cpu": "4"}, "limits": {"cpu": "2"}}}})
    invalid = wait_for(
        lambda: (c := condition(tts(cluster, "demo", ns), "Degraded")) and "less than or equal to cpu limit" in c["message"] and c,
        what="the 422 in the status",
    )  # fmt: skip
    assert invalid["reason"] == "ApplyFailed"
    cluster.patch_tts("demo", ns, [{"op": "remove", "path": "/spec/resources"}])
    wait_for(lambda: running(cluster, ns), what="Running once the spec is valid")


def _resyncs(cluster) -> int:
    """Resync rounds so far: each lists the TTSServices once."""
    return sum(
        1
        for e in cluster.audit()
        if e["verb"] == "list" and urllib.parse.urlsplit(e["requestURI"]).path.endswith("/ttsservices")
    )


@pytest.mark.parametrize("name", ["1abc", "dots.in.it", "under_score", "x" * 64, "trailing-"])
def test_names_that_cannot_be_a_service_name_are_rejected_by_the_crd(cluster, ns, name):
    result = cluster.plane.kubectl(
        "apply", "-f", "-", input=json.dumps(tts_object(name, {}, ns)), check=False
    )
    assert result.returncode != 0
    assert "DNS-1035 label" in result.stderr or "metadata.name" in result.stderr, result.stderr


def test_the_operator_watches_its_children_with_server_side_label_selectors(cluster, operator):
    watches = [
        e
        for e in cluster.audit()
        if e["verb"] == "watch" and ("/deployments" in e["requestURI"] or "/services" in e["requestURI"])
    ]
    assert watches
    for e in watches:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(e["requestURI"]).query)
        assert query.get("labelSelector") == ["app.kubernetes.io/managed-by=kubetts-operator"], e[
            "requestURI"
        ]


def test_the_operator_is_never_forbidden_and_uses_what_the_chart_grants(cluster, operator):
    """RBAC by use: the API server authorized every request of the operator's ServiceAccount; and each
    rule the chart grants was used (after the scenarios above)."""
    import test_chart

    events_ = cluster.audit()
    forbidden = [
        e for e in events_ if e.get("annotations", {}).get("authorization.k8s.io/decision") == "forbid"
    ]
    assert not forbidden, dump(forbidden[:3])
    used: dict[tuple[str, str], set[str]] = {}
    for e in events_:
        ref = e.get("objectRef") or {}
        if not ref.get("resource"):
            continue  # discovery
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        used.setdefault((ref.get("apiGroup", ""), resource), set()).add(e["verb"])
    docs = test_chart.render()
    grants = test_chart.granted(test_chart.by_kind(docs, "ClusterRole")[0])
    lease = [
        r for r in test_chart.by_kind(docs, "Role") if r["metadata"]["name"].endswith("-leader-election")
    ][0]
    for key, verbs in test_chart.granted(lease).items():
        grants.setdefault(key, set()).update(verbs)
    for key, verbs in used.items():
        assert verbs <= grants.get(key, set()), f"used {sorted(verbs)} on {key}, granted {grants.get(key)}"
    unused = {k: sorted(v - used.get(k, set())) for k, v in grants.items()}
    # Not requests but checks: "create" on the children is what a server-side apply that
    # creates the child is authorized against, and "update" on ttsservices/finalizers is what
    # OwnerReferencesPermissionEnforcement checks for blockOwnerDeletion (proven needed below).
    expected_unused = {
        ("apps", "deployments"): ["create"],
        ("", "services"): ["create"],
        ("kubetts.io", "ttsservices/finalizers"): ["update"],
        ("monitoring.coreos.com", "servicemonitors"): ["create"],
        ("monitoring.coreos.com", "prometheusrules"): ["create"],
        # Only for autoscaling.provider hpa / keda: tests/test_operator_autoscaling.py's operator
        # runs with these same grants and writes, reads and deletes both.
        ("autoscaling", "horizontalpodautoscalers"): ["create", "delete", "patch"],
        ("keda.sh", "scaledobjects"): ["create", "delete", "patch"],
    }
    assert {k: v for k, v in unused.items() if v} == {k: v for k, v in expected_unused.items() if k in grants}


@pytest.mark.parametrize(
    ("dropped", "refusal"),
    [
        (("apps", "deployments", "create"), 'cannot create resource "deployments"'),
        (("kubetts.io", "ttsservices/finalizers", "update"), "cannot set blockOwnerDeletion"),
        (None, None),
    ],
    ids=["without-create", "without-finalizers", "as-granted"],
)
def test_grants_that_are_checked_not_requested_are_needed(cluster, ns, dropped, refusal):
    """The chart's rules, minus one grant, for a probe account that applies a child as the
    operator does (server-side, owned by a TTSService): the API server refuses without it."""
    import test_chart
    from tts_operator.builders import build_deployment, owned
    from tts_operator.spec import parse_spec

    (role,) = test_chart.by_kind(test_chart.render(), "ClusterRole")
    rules = []
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                verbs = [v for v in rule["verbs"] if (group, resource, v) != dropped]
                if verbs:
                    rules.append({"apiGroups": [group], "resources": [resource], "verbs": verbs})
    account = f"probe-{ns}"
    cluster.plane.kubectl("create", "serviceaccount", account, "-n", ns)
    cluster.plane.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                         "metadata": {"name": account}, "rules": rules})  # fmt: skip
    cluster.plane.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                         "metadata": {"name": account},
                         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": account},
                         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}]})  # fmt: skip
    # An owner the operator does not act on (its own children would race the probe).
    owner = {"apiVersion": "kubetts.io/v1alpha1", "kind": "TTSService",
             "metadata": {"name": "owner", "namespace": ns, "uid": "will-be-replaced"}}  # fmt: skip
    cluster.plane.apply(tts_object("owner", {}, ns))
    owner["metadata"]["uid"] = tts(cluster, "owner", ns)["metadata"]["uid"]
    child = owned(build_deployment("probe", ns, parse_spec({}), 1), owner)
    result = cluster.plane.kubectl(
        "apply", "--server-side", "--field-manager=kubetts-operator", f"--as=system:serviceaccount:{ns}:{account}",
        "-f", "-", input=json.dumps(child), check=False,
    )  # fmt: skip
    if refusal is None:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0 and refusal in result.stderr, result.stderr
