"""Everything kubetts runs passes the restricted Pod Security Standard."""

from __future__ import annotations

import pytest
from test_operator_builders import SPECS
from tts_operator.builders import build_deployment
from tts_operator.spec import parse_spec

# https://kubernetes.io/docs/concepts/security/pod-security-standards/ (restricted profile)
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod: dict) -> list[str]:
    problems = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(flag)
    pod_sc = pod.get("securityContext", {})
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']}: {sorted(kinds)}")
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        sc = c.get("securityContext", {})
        if sc.get("privileged"):
            problems.append(f"{c['name']}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{c['name']}: allowPrivilegeEscalation must be false")
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            problems.append(f"{c['name']}: runAsNonRoot")
        if (sc.get("runAsUser", pod_sc.get("runAsUser")) or 1) == 0:
            problems.append(f"{c['name']}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{c['name']}: seccompProfile")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{c['name']}: capabilities")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            problems.append(f"{c['name']}: hostPort")
    return problems


@pytest.mark.parametrize("case", [c for c in SPECS if c != "hostpath"])
def test_tts_pods_are_restricted(case):
    pod = build_deployment("demo", "ns", parse_spec(SPECS[case]), 1)["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []


def test_hostpath_models_are_the_documented_exception():
    pod = build_deployment("demo", "ns", parse_spec(SPECS["hostpath"]), 1)["spec"]["template"]["spec"]
    assert restricted_violations(pod) == ["volume model: ['hostPath']"]


def test_operator_pod_is_restricted():
    test_chart = pytest.importorskip("test_chart")
    if not __import__("pathlib").Path(test_chart.HELM).is_file():
        pytest.skip("Helm not installed")
    (deployment,) = test_chart.by_kind(test_chart.render(), "Deployment")
    assert restricted_violations(deployment["spec"]["template"]["spec"]) == []


def test_the_checker_catches_violations():
    bad = {"hostNetwork": True, "containers": [{"name": "c", "securityContext": {"privileged": True}}]}
    problems = restricted_violations(bad)
    assert "hostNetwork" in problems and "c: privileged" in problems and "c: seccompProfile" in problems
