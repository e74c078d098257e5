"""The test cluster as users set it up: the control plane, the chart installed with the real Helm,
and the operator's own ServiceAccount credentials (a TokenRequest token), so the API server
enforces the chart's RBAC on every call the operator makes.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from control_plane import ControlPlane, kubeconfig, write_kubeconfig

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "kubetts"
HELM = os.environ.get("KUBETTS_HELM") or str(ROOT / ".cache" / "helm" / "helm")
RELEASE, RELEASE_NAMESPACE = "kubetts", "kubetts-system"
OPERATOR_ACCOUNT = "kubetts-operator"  # the chart's ServiceAccount for release "kubetts"
OPERATOR_USER = f"system:serviceaccount:{RELEASE_NAMESPACE}:{OPERATOR_ACCOUNT}"
_namespaces = itertools.count(1)


@dataclass
class Cluster:
    plane: ControlPlane
    workdir: Path
    operator_kubeconfig: Path  # the chart's ServiceAccount, by token

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [HELM, *args, "--kubeconfig", str(self.plane.admin_kubeconfig)],
            capture_output=True, text=True, timeout=180, env=self.plane.env(),
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
        return result

    def install_chart(self) -> None:
        """``helm install`` as the README says; then credentials of the chart's ServiceAccount."""
        self.helm(
            "install", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, "--create-namespace",
            "--wait", "--timeout", "120s",
        )  # fmt: skip
        token = self.plane.service_account_token(RELEASE_NAMESPACE, OPERATOR_ACCOUNT, seconds=6 * 3600)
        self.user_kubeconfig(self.operator_kubeconfig, {"token": token})

    def namespace(self, prefix: str = "t") -> str:
        """A fresh namespace for one test (the operator watches them all)."""
        name = f"{prefix}-{next(_namespaces)}"
        self.plane.kubectl("create", "namespace", name)
        return name

    def user_kubeconfig(self, path: Path, user: dict[str, Any], namespace: str = RELEASE_NAMESPACE) -> Path:
        """A kubeconfig for this cluster with the given ``user`` entry (token, certificate or exec)."""
        document = kubeconfig(self.plane.server, self.plane.ca, user=user, name="kubetts-operator")
        document["contexts"][0]["context"]["namespace"] = namespace  # the operator's Lease lives there
        return write_kubeconfig(path, document)

    def patch_tts(self, name: str, namespace: str, patch: dict[str, Any] | list[dict[str, Any]]) -> None:
        """``kubectl patch tts``: a merge patch (a dict) or a JSON patch (a list of operations)."""
        kind = "merge" if isinstance(patch, dict) else "json"
        self.plane.kubectl("patch", "tts", name, "-n", namespace, f"--type={kind}", "-p", json.dumps(patch))

    def audit(self, user: str = OPERATOR_USER) -> list[dict[str, Any]]:
        return self.plane.audit_events(user)


def start_cluster(plane: ControlPlane, workdir: Path) -> Cluster:
    cluster = Cluster(plane, workdir, workdir / "operator.kubeconfig")
    cluster.install_chart()
    return cluster


def tts(cluster: Cluster, name: str, namespace: str) -> dict[str, Any] | None:
    return cluster.plane.get("ttsservice", name, "-n", namespace)


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    return next(
        (c for c in ((obj or {}).get("status") or {}).get("conditions", []) if c["type"] == kind), None
    )


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)[:4000]
